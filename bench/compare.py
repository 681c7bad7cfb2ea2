"""Osprey beside the floor, raw ONNX Runtime and MLServer, in one run (issue 7).

    python -m bench.compare                 # 5 interleaved rounds (about 30 minutes)
    python -m bench.compare --rounds 1      # one round of everything
    python -m bench.compare --smoke         # CI: one short round, every answer checked

Systems, each serving the plain MLP of ``bench/models.py`` (30 float32 features in,
PROBABILITY out), the servers pinned to one core and this load generator to the
other:

* **floor** (``bench.floor``): a ``grpc.aio`` server on Osprey's stubs and event loop
  that parses each request and returns a prebuilt answer of the same shape, with the
  request's id: what Python and grpcio cost here, nothing else;
* **raw ORT**: ``session.run`` back to back in this process, at 1, 256 and 1024 rows:
  the model's own cost;
* **Osprey** with ``--audit relaxed`` (what the targets are stated for), with
  ``--audit strict`` (the default), with ``--audit off`` (how much of the gap is the
  audit log's) and relaxed with ``--workers 2`` (both workers on the server's core),
  batching as ``bench/models.py`` configures it;
* **MLServer** 1.7.1 (``bench.mlserver``: a venv of its own, the same MLP as a
  scikit-learn artifact): every configuration of ``bench.mlserver.CONFIGURATIONS``
  (parallel workers 0/1/2, adaptive batching on/off) is tried first at 1 row c=64 and
  at 256 rows c=8; the best of each goes into the rounds.

Scenarios: 1-row unary requests at concurrency 1, 8 and 64, 1-row streaming at 8 and
64 (one ``ModelStreamInfer`` stream per client, one request outstanding on each),
256-row unary at 8, 1024-row unary at 4, and an open loop of 1-row requests at 50 %
and 90 % of Osprey relaxed's 1-row c=64 rate in the same round (latency from when each
request was due: ``bench.loadgen``). Each number is the median of the rounds, printed
with its spread (min-max); before each, the harness waits until the server core is idle
(an audit side-car's backlog after large requests would otherwise land on the next
cell). The ratio of record is the **server CPU per request** (the
server's process tree's user+system CPU over the window, Osprey's audit shipper
side-car left out, divided by the requests answered), against the floor's. After the
rounds, perf_analyzer (``bench/perf_analyzer_setup.sh``) drives Osprey relaxed, unary
and streaming, at concurrency 8 and 64 (the floor has no ModelMetadata, which
perf_analyzer reads first). MLServer is left out of the streaming scenarios: its
``ModelStreamInfer`` answers a message type of its own, which Triton clients cannot read
(and it answers only the first request of a stream). The run writes JSON, a markdown
table and a latency-vs-throughput plot (PNG) to ``bench/results``.

Targets (this 2-core machine), printed as met or not: Osprey (audit relaxed) <= 1.18 x
the floor's server CPU per request at 1 row c=64 and <= 1.5 x at 256 rows c=8;
Osprey >= 2 x the best MLServer's requests/s at 1 row c=64 and >= 5 x at 256 rows c=8;
1-row streaming >= 1.4 x unary requests/s (c=64); at c=1 Osprey's p50 <= the floor's +
0.3 ms; open loop at 90 %: p99 <= 10 x p50 and no errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient

from . import mlserver
from .loadgen import LoadResult, Payload, Scenario, build_payload
from .loadgen import run_scenario as drive
from .machine import (
    Placement,
    choose_placement,
    machine_info,
    pin_this_process,
    system_cpu_seconds,
    tree_cpu_seconds,
    wait_until_quiet,
)
from .models import write_decided_mlp
from .reference import OrtReference
from .server_process import BenchServer, ServerFailed, is_audit_sidecar

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SATURATION = Scenario("unary", 1, 64)
LARGE = Scenario("unary", 256, 8)
CLOSED = (Scenario("unary", 1, 1), Scenario("unary", 1, 8), SATURATION,
          Scenario("stream", 1, 8), Scenario("stream", 1, 64), LARGE,
          Scenario("unary", 1024, 4))
OPEN_LOADS = (0.5, 0.9)  # of Osprey relaxed's 1-row c=64 rate in the same round
OPEN_OUTSTANDING = 2048  # more outstanding than this counts as an error
SMOKE = (Scenario("unary", 1, 1), Scenario("stream", 1, 8), LARGE, Scenario("unary", 1024, 4),
         Scenario("open", 1, OPEN_OUTSTANDING, 200.0))
OSPREY = {
    "osprey-off": ["--audit", "off"],
    "osprey-relaxed": ["--audit", "relaxed"],
    "osprey-strict": ["--audit", "strict"],
    "osprey-relaxed-w2": ["--audit", "relaxed", "--workers", "2"],
}
SMOKE_SYSTEMS = ("floor", "osprey-off", "osprey-relaxed", "osprey-strict")
CPU_TARGETS = {(1, 64): 1.18, (256, 8): 1.5}  # Osprey / floor server CPU per request
MLSERVER_TARGETS = {(1, 64): 2.0, (256, 8): 5.0}  # Osprey / best MLServer requests/s
STREAM_TARGET = 1.4  # 1-row streaming / unary requests/s at c=64
LATENCY_SLACK_MS = 0.3  # at c=1: Osprey's p50 <= the floor's + this
OPEN_TAIL = 10.0  # open loop at 90 %: p99 <= this x p50
ROWS = (1, 256, 1024)


@dataclass
class Cell:
    round: int
    system: str
    scenario: Scenario
    result: LoadResult
    load: str = ""  # open loop: the share of Osprey's saturation ("90%"), or the rate

    @property
    def cpu_us_per_request(self) -> float:
        busy = self.result.cpu_busy.get("server", float("nan"))
        return busy / self.result.requests_per_s * 1e6 if self.result.requests else float("nan")


@dataclass
class System:
    """A running server under test and how to check its answers."""

    server: BenchServer
    payloads: dict[int, Payload]
    check: bool  # compare answers with ORT (the floor answers zeros)
    leave_out: Callable[[str], bool] = field(default=lambda _: False)

    def cpu_seconds(self) -> float:
        try:
            return tree_cpu_seconds(self.server.proc.pid, self.leave_out)
        except (OSError, ValueError, IndexError):
            return float("nan")


def mlserver_payloads(payloads: dict[int, Payload]) -> dict[int, Payload]:
    """The same requests, with the answers MLServer gives: ``predict_proba`` [rows, 2]."""
    out = {}
    for rows, payload in payloads.items():
        expected = []
        for want in payload.expected:
            p = want["PROBABILITY"]
            expected.append({mlserver.OUTPUT_NAME: np.concatenate([1 - p, p], axis=1)})
        out[rows] = Payload(rows, payload.inputs, expected)
    return out


def start_osprey(repo: Path, root: Path, prefix: list[str], names: tuple[str, ...]
                 ) -> dict[str, BenchServer]:
    floor = [sys.executable, "-m", "bench.floor", "--output", "PROBABILITY:FP32:1"]
    servers: dict[str, BenchServer] = {}
    for name in names:
        work = root / name
        work.mkdir()
        if name == "floor":
            servers[name] = BenchServer(repo, work, prefix, "WARNING", command=floor)
        else:
            servers[name] = BenchServer(repo, work, prefix, "WARNING", OSPREY[name])
    for server in servers.values():
        server.wait_ready()
    return servers


def floor_answers_correctly(url: str, payload: Payload) -> list[str]:
    """The floor's answers have the model's output shape and echo the request id
    (their values are zeros: it runs no model)."""
    problems = []
    with grpcclient.InferenceServerClient(url) as client:
        for i, (inputs, expected) in enumerate(zip(payload.inputs, payload.expected,
                                                    strict=True)):
            result = client.infer("mlp", inputs, request_id=f"floor-{i}")
            got = result.as_numpy("PROBABILITY")
            want = expected["PROBABILITY"]
            if got is None or got.shape != want.shape:
                problems.append(f"floor answer {i}: shape {None if got is None else got.shape}"
                                f", expected {want.shape}")
            if result.get_response().id != f"floor-{i}":
                problems.append(f"floor answer {i}: id {result.get_response().id!r}")
    return problems


async def measure(system: System, scenario: Scenario, args: argparse.Namespace,
                  client: aioclient.InferenceServerClient) -> LoadResult:
    if args.quiet_cpu is not None:
        # what the previous cell left running (an audit side-car's backlog after large
        # requests: seconds of shipping) must not land on this cell's server
        waited = await asyncio.to_thread(wait_until_quiet, args.quiet_cpu)
        if waited > 2:
            print(f"    (waited {waited:.1f} s for the server core to go quiet)", flush=True)
    clocks = {"server": system.cpu_seconds, "client": time.process_time,
              "machine": system_cpu_seconds}
    return await drive(client, "mlp", system.payloads[scenario.rows], scenario, args.seconds,
                       args.warmup, args.check_every if system.check else 0, "per-worker",
                       clocks)


def pick_mlserver(root: Path, prefix: list[str], payloads: dict[int, Payload],
                  args: argparse.Namespace
                  ) -> tuple[dict[str, System], dict[str, str], list[dict[str, Any]]]:
    """Try every MLServer configuration at 1 row c=64 and 256 rows c=8 (one window
    each); keep the best of each scenario running for the rounds. Returns the systems
    kept (by configuration name), which is best where ("rows=1 c=64" -> name), and
    every configuration's numbers."""
    tried: list[dict[str, Any]] = []
    answers = mlserver_payloads(payloads)
    running: dict[str, System] = {}
    for config in mlserver.CONFIGURATIONS:
        repo = mlserver.write_mlserver_repository(
            root / config.name, parallel_workers=config.parallel_workers,
            adaptive_batching=config.adaptive_batching)
        work = root / f"{config.name}-run"
        work.mkdir()
        server = mlserver.MLServerProcess(repo, work, prefix)
        system = System(server, answers, check=True)
        try:
            server.wait_ready()
            results = asyncio.run(_try(system, args))
        except ServerFailed as exc:
            tried.append({"configuration": config.name, "failed": str(exc)[-2000:]})
            server.stop()
            continue
        row: dict[str, Any] = {"configuration": config.name}
        for scenario, result in results.items():
            row[f"rows={scenario.rows} c={scenario.concurrency}"] = {
                "requests_per_s": result.requests_per_s, "errors": result.errors,
                "wrong": result.wrong, "p50_ms": result.latency.p50_ms}
        tried.append(row)
        print(f"  {config.name:22} " + "  ".join(
            f"rows={s.rows} c={s.concurrency}: {r.requests_per_s:8,.0f} req/s "
            f"(errors {r.errors}, wrong {r.wrong})" for s, r in results.items()), flush=True)
        running[config.name] = system
    best: dict[str, str] = {}
    for scenario in (SATURATION, LARGE):
        key = f"rows={scenario.rows} c={scenario.concurrency}"
        fine = [t for t in tried if key in t and not t[key]["errors"] and not t[key]["wrong"]]
        if fine:
            best[key] = max(fine, key=lambda t: t[key]["requests_per_s"])["configuration"]
            print(f"  best at {key}: {best[key]}", flush=True)
    for name, system in running.items():
        if name not in best.values():
            system.server.stop()
    return {name: running[name] for name in dict.fromkeys(best.values())}, best, tried


async def _try(system: System, args: argparse.Namespace) -> dict[Scenario, LoadResult]:
    client = aioclient.InferenceServerClient(system.server.url)
    try:
        return {s: await measure(system, s, args, client) for s in (SATURATION, LARGE)}
    finally:
        await client.close()


async def run_rounds(systems: dict[str, System], scenarios: tuple[Scenario, ...],
                     args: argparse.Namespace) -> list[Cell]:
    cells: list[Cell] = []
    clients = {n: aioclient.InferenceServerClient(s.server.url) for n, s in systems.items()}
    names = tuple(systems)
    try:
        for r in range(args.rounds):
            order = names if r % 2 == 0 else tuple(reversed(names))
            for scenario in scenarios:
                for name in order:
                    if scenario.api == "stream" and name.startswith("mlserver"):
                        continue  # its ModelStreamInfer answers another message type
                    result = await measure(systems[name], scenario, args, clients[name])
                    load = f"{scenario.rate:,.0f}/s" if scenario.api == "open" else ""
                    cell = Cell(r + 1, name, scenario, result, load)
                    cells.append(cell)
                    _print_cell(cell)
                    if not systems[name].server.alive():
                        raise ServerFailed(
                            f"{name} died:\n{systems[name].server.stderr_tail()}")
            if args.smoke:
                continue
            saturation = next((c.result.requests_per_s for c in cells if c.round == r + 1
                               and c.system == "osprey-relaxed" and c.scenario == SATURATION),
                              None)
            for share in OPEN_LOADS if saturation else ():
                assert saturation is not None
                scenario = Scenario("open", 1, OPEN_OUTSTANDING, round(saturation * share))
                for name in order:
                    result = await measure(systems[name], scenario, args, clients[name])
                    cell = Cell(r + 1, name, scenario, result, f"{share:.0%}")
                    cells.append(cell)
                    _print_cell(cell)
    finally:
        for client in clients.values():
            await client.close()
    return cells


def _label(cell: Cell) -> str:
    if cell.scenario.api == "open":
        return f"open {cell.scenario.rate:,.0f}/s ({cell.load})"
    return f"{cell.scenario.api} c={cell.scenario.concurrency}"


def _print_cell(cell: Cell) -> None:
    r = cell.result
    print(f"  round {cell.round} {cell.system:19} rows={cell.scenario.rows:<5}"
          f"{_label(cell):28} {r.requests_per_s:9,.0f} req/s  p50 "
          f"{r.latency.p50_ms:8.3f} ms  p99 {r.latency.p99_ms:8.3f} ms  server CPU "
          f"{cell.cpu_us_per_request:6.0f} µs/req  errors {r.errors}  wrong {r.wrong}",
          flush=True)


def _spread(values: list[float], fmt: str) -> str:
    med = statistics.median(values)
    return (f"{med:{fmt}}" if len(values) == 1 else
            f"{med:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})")


def summarise(cells: list[Cell], ort: dict[int, float], systems: list[str],
              mlserver_best: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The markdown table (medians with min-max) and the targets, met or not."""
    lines = ["| system | scenario | rows | req/s | rows/s | p50 ms | p99 ms | p99.9 ms | "
             "server CPU µs/req | vs floor | errors |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    medians: dict[str, dict[str, float]] = {}
    groups: dict[tuple[Any, ...], list[Cell]] = {}
    for cell in cells:
        scenario = cell.scenario
        if scenario.api == "open":  # the rate moves per round, the share does not
            key: tuple[Any, ...] = (cell.system, "open", scenario.rows, cell.load)
        else:
            key = (cell.system, scenario.api, scenario.rows, scenario.concurrency)
        groups.setdefault(key, []).append(cell)
    order = {name: i for i, name in enumerate(systems)}
    scenario_order = [(s.api, s.rows, s.concurrency) for s in CLOSED + SMOKE]
    def rank(key: tuple[Any, ...]) -> tuple[Any, ...]:
        where = (scenario_order.index(key[1:]) if key[1:] in scenario_order
                 else len(scenario_order))
        return (where, str(key[3]), order.get(key[0], 99))
    for key in sorted(groups, key=rank):
        mine = groups[key]
        system, api, rows, conc = key
        cpu = [c.cpu_us_per_request for c in mine]
        label = f"{api} {conc}" if api == "open" else f"{api} c={conc}"
        stats = {
            "requests_per_s": statistics.median(c.result.requests_per_s for c in mine),
            "p50_ms": statistics.median(c.result.latency.p50_ms for c in mine),
            "p99_ms": statistics.median(c.result.latency.p99_ms for c in mine),
            "cpu_us": statistics.median(cpu),
            "errors": sum(c.result.errors + c.result.wrong for c in mine),
        }
        medians[f"{system} rows={rows} {label}"] = stats
        floor = medians.get(f"floor rows={rows} {label}")
        versus = (f"{stats['cpu_us'] / floor['cpu_us']:.2f}x"
                  if floor and system != "floor" and api != "open" else "")
        lines.append(
            f"| {system} | {label} | {rows} | "
            f"{_spread([c.result.requests_per_s for c in mine], ',.0f')} | "
            f"{_spread([c.result.rows_per_s for c in mine], ',.0f')} | "
            f"{_spread([c.result.latency.p50_ms for c in mine], '.3f')} | "
            f"{_spread([c.result.latency.p99_ms for c in mine], '.3f')} | "
            f"{statistics.median(c.result.latency.p999_ms for c in mine):.3f} | "
            f"{_spread(cpu, '.0f')} | {versus} | {stats['errors']:.0f} |")
    for rows, us in sorted(ort.items()):
        lines.append(f"| raw ORT (in-process) | call | {rows} | {1e6 / us:,.0f} | "
                     f"{rows * 1e6 / us:,.0f} | {us / 1000:.3f} | | | {us:.0f} (call) | | 0 |")
    summary = {"medians": medians, "raw_ort_us_per_call": ort, "mlserver_best": mlserver_best,
               "verdicts": verdicts(medians, mlserver_best)}
    return "\n".join(lines), summary


def verdicts(medians: dict[str, dict[str, float]], mlserver_best: dict[str, str]
             ) -> list[str]:
    """Every target of the issue this run can judge, met or NOT met."""
    out = []

    def get(system: str, rows: int, label: str) -> dict[str, float] | None:
        return medians.get(f"{system} rows={rows} {label}")

    def say(text: str, met: bool) -> None:
        out.append(f"{text}: {'met' if met else 'NOT met'}")

    for (rows, conc), limit in CPU_TARGETS.items():
        osprey, floor = get("osprey-relaxed", rows, f"unary c={conc}"), get(
            "floor", rows, f"unary c={conc}")
        if osprey and floor:
            ratio = osprey["cpu_us"] / floor["cpu_us"]
            say(f"server CPU per request, {rows} row(s) c={conc}: Osprey (relaxed) "
                f"{ratio:.2f} x the floor's (target <= {limit})", ratio <= limit)
    for (rows, conc), factor in MLSERVER_TARGETS.items():
        osprey = get("osprey-relaxed", rows, f"unary c={conc}")
        name = mlserver_best.get(f"rows={rows} c={conc}")
        peer = get(name, rows, f"unary c={conc}") if name else None
        if osprey and peer:
            ratio = osprey["requests_per_s"] / peer["requests_per_s"]
            say(f"requests/s, {rows} row(s) c={conc}: Osprey (relaxed) {ratio:.2f} x the best "
                f"MLServer's ({name}; target >= {factor})", ratio >= factor)
    unary, stream = get("osprey-relaxed", 1, "unary c=64"), get("osprey-relaxed", 1,
                                                                "stream c=64")
    if unary and stream:
        ratio = stream["requests_per_s"] / unary["requests_per_s"]
        say(f"1-row streaming {ratio:.2f} x unary requests/s at c=64 (target >= "
            f"{STREAM_TARGET})", ratio >= STREAM_TARGET)
    osprey, floor = get("osprey-relaxed", 1, "unary c=1"), get("floor", 1, "unary c=1")
    if osprey and floor:
        added = osprey["p50_ms"] - floor["p50_ms"]
        say(f"p50 at c=1: Osprey (relaxed) {osprey['p50_ms']:.3f} ms, floor "
            f"{floor['p50_ms']:.3f} ms (+{added:.3f}; target <= +{LATENCY_SLACK_MS})",
            added <= LATENCY_SLACK_MS)
    loaded = get("osprey-relaxed", 1, "open 90%")
    if loaded:
        tail = loaded["p99_ms"] / loaded["p50_ms"]
        say(f"open loop at 90 %: p99 {loaded['p99_ms']:.3f} ms = {tail:.1f} x p50, "
            f"{loaded['errors']:.0f} errors (target p99 <= {OPEN_TAIL:.0f} x p50, no errors)",
            tail <= OPEN_TAIL and loaded["errors"] == 0)
    return out


def plot(cells: list[Cell], path: Path) -> None:
    """Latency (p50 and p99) against throughput for each system, 1-row requests."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=False)
    systems = list(dict.fromkeys(c.system for c in cells))
    for ax, pick, title in ((axes[0], "p50_ms", "p50"), (axes[1], "p99_ms", "p99")):
        for system in systems:
            points = []
            for api in ("unary", "open"):
                groups: dict[Any, list[Cell]] = {}
                for c in cells:
                    if c.system == system and c.scenario.rows == 1 and c.scenario.api == api:
                        # open-loop cells group by load: the rate moves per round
                        groups.setdefault(c.load or c.scenario.concurrency, []).append(c)
                for group in groups.values():
                    points.append((statistics.median(c.result.requests_per_s for c in group),
                                   statistics.median(getattr(c.result.latency, pick)
                                                     for c in group)))
            if points:
                points.sort()
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                        label=system)
        ax.set_xlabel("requests/s (1-row requests: unary c=1/8/64 and open loop)")
        ax.set_ylabel(f"{title} latency (ms)")
        ax.set_yscale("log")
        ax.set_title(f"{title} latency vs throughput")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def perf_analyzer_runs(systems: dict[str, System], seconds: float, placement: Placement
                       ) -> list[dict[str, Any]]:
    """perf_analyzer (unary and streaming, concurrency 8 and 64) against Osprey relaxed
    (the floor has no ModelMetadata/ModelConfig, which perf_analyzer reads first); its
    client-side throughput and latencies."""
    from . import perf_analyzer as pa_module

    try:
        pa = pa_module.locate()
    except pa_module.PerfAnalyzerMissing as exc:
        return [{"error": str(exc)}]
    runs: list[dict[str, Any]] = []
    for name in ("osprey-relaxed",):
        if name not in systems:
            continue
        for streaming in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                csv_path = Path(tmp) / "perf.csv"
                options = argparse.Namespace(
                    batch_size=1, concurrency_range="8:64:56", stability=50,
                    request_count=max(200, int(seconds * 1000)), interval_ms=1000,
                    max_trials=3, streaming=streaming)
                command = pa_module.perf_command(pa, systems[name].server.url, csv_path,
                                                 options, [])
                prefix = [] if placement.client_cpu is None else [
                    "taskset", "-c", str(placement.client_cpu)]
                out = subprocess.run(prefix + command, env=pa.env(), capture_output=True,
                                     text=True, timeout=300)
                rows = pa_module.parse_csv(csv_path.read_text()) if csv_path.is_file() else []
            for row in rows:
                runs.append({"system": name, "streaming": streaming,
                             "concurrency": row.concurrency, "infer_per_s": row.infer_per_s,
                             "p50_ms": row.client_p50_us / 1000,
                             "p99_ms": row.client_p99_us / 1000})
            if out.returncode != 0:
                runs.append({"system": name, "streaming": streaming,
                             "error": (out.stdout + out.stderr)[-1500:]})
            print(f"  perf_analyzer {name} {'streaming' if streaming else 'unary'}: " + ", ".join(
                f"c={r.concurrency} {r.infer_per_s:,.0f}/s p99 {r.client_p99_us / 1000:.3f} ms"
                for r in rows), flush=True)
    return runs


def perf_table(runs: list[dict[str, Any]]) -> str:
    """perf_analyzer's client-side numbers as a markdown table ('' when it did not run)."""
    rows = [r for r in runs if "error" not in r]
    if not rows:
        return ""
    lines = ["| perf_analyzer against | api | c | infer/s | p50 ms | p99 ms |",
             "|---|---|--:|--:|--:|--:|"]
    lines += [f"| {r['system']} | {'stream' if r['streaming'] else 'unary'} | "
              f"{r['concurrency']} | {r['infer_per_s']:,.0f} | {r['p50_ms']:.3f} | "
              f"{r['p99_ms']:.3f} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--rounds", type=int, default=5)
    add("--seconds", type=float, default=3.0)
    add("--warmup", type=float, default=1.0)
    add("--check-every", type=int, default=50,
        help="compare every Nth answer with in-process ORT (smoke: every one)")
    add("--no-mlserver", action="store_true", help="leave MLServer out")
    add("--no-perf-analyzer", action="store_true", help="leave perf_analyzer out")
    add("--smoke", action="store_true")
    add("--output", type=Path)
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.seconds, args.warmup, args.check_every = 1, 0.4, 0.2, 1
        args.no_mlserver = args.no_perf_analyzer = True
    machine = machine_info()
    placement = choose_placement(pin=True)
    pin_this_process(placement)
    args.quiet_cpu = None if args.smoke else placement.server_cpu
    print(f"machine: {machine['cpu_model']}; placement: {placement.describe()}", flush=True)
    names = SMOKE_SYSTEMS if args.smoke else ("floor", *OSPREY)
    scenarios = SMOKE if args.smoke else CLOSED
    problems: list[str] = []
    tried: list[dict[str, Any]] = []
    best: dict[str, str] = {}
    perf: list[dict[str, Any]] = []
    systems: dict[str, System] = {}
    with tempfile.TemporaryDirectory(prefix="osprey-compare-") as tmp:
        root = Path(tmp)
        repo = root / "models"
        ref = OrtReference(write_decided_mlp(repo))
        payloads = {}
        for rows in ROWS:
            batches = ref.make_batches(rows, 16 if rows < 1024 else 4, seed=rows)
            payloads[rows] = build_payload(batches, [ref.run(b) for b in batches])
        ort = {rows: ref.measure(ref.make_batches(rows, 1, seed=rows)[0], args.seconds,
                                 args.warmup).latency.p50_ms * 1000 for rows in ROWS}
        try:
            servers = start_osprey(repo, root, placement.server_prefix(), names)
            for name, server in servers.items():
                systems[name] = System(server, payloads, check=name != "floor",
                                       leave_out=is_audit_sidecar)
            problems += floor_answers_correctly(servers["floor"].url, payloads[1])
            if not args.no_mlserver:
                print("MLServer configurations (1 window each):", flush=True)
                kept, best, tried = pick_mlserver(root / "mlserver", placement.server_prefix(),
                                                  payloads, args)
                systems.update(kept)
                if not kept:
                    problems.append("no MLServer configuration answered correctly")
            cells = asyncio.run(run_rounds(systems, scenarios, args))
            if not args.no_perf_analyzer:
                perf = perf_analyzer_runs(systems, args.seconds, placement)
        finally:
            codes = {n: s.server.stop() for n, s in systems.items()}
    order = list(systems)
    table, summary = summarise(cells, ort, order, best)
    if perf_table(perf):
        table += "\n\n" + perf_table(perf)
    print()
    print(table)
    print()
    for line in summary["verdicts"]:
        print(line)
    problems += [f"{c.system} {c.scenario}: {c.result.errors} errors, {c.result.wrong} wrong"
                 for c in cells if (c.result.errors or c.result.wrong)
                 and (c.scenario.api != "open" or args.smoke)]
    problems += [f"{n} exited with {code}" for n, code in codes.items() if code != 0]
    problems += [f"perf_analyzer: {r['error'][:300]}" for r in perf if "error" in r]
    output = args.output or RESULTS_DIR / time.strftime("compare-%Y%m%d-%H%M%S.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    picture = output.with_suffix(".png")
    plot(cells, picture)
    output.with_suffix(".md").write_text(table + "\n\n" + "\n".join(summary["verdicts"]) + "\n")
    output.write_text(json.dumps({
        "bench": "compare", "machine": machine, "placement": placement.describe(),
        "argv": sys.argv[1:] if argv is None else argv,
        "numpy": np.__version__, "summary": summary, "table": table, "problems": problems,
        "mlserver_tried": tried, "perf_analyzer": perf,
        "cells": [{"round": c.round, "system": c.system, "scenario": vars(c.scenario),
                   "requests_per_s": c.result.requests_per_s, "errors": c.result.errors,
                   "wrong": c.result.wrong, "checked": c.result.checked,
                   "p50_ms": c.result.latency.p50_ms, "p99_ms": c.result.latency.p99_ms,
                   "p999_ms": c.result.latency.p999_ms,
                   "server_cpu_us_per_request": c.cpu_us_per_request} for c in cells],
    }, indent=2))
    print(f"results: {output} (table {output.with_suffix('.md').name}, plot {picture.name})")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
