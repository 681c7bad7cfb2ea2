"""Osprey beside the floor and raw ONNX Runtime, in one run (the performance issue).

    python -m bench.compare            # 5 interleaved rounds (about 4 minutes)
    python -m bench.compare --smoke    # CI: one short round, every answer checked

Systems, each serving the plain MLP of ``bench/models.py`` (30 float32 features in,
PROBABILITY out), the servers pinned to one core and this load generator to the
other:

* **floor** (``bench.floor``): a ``grpc.aio`` server on Osprey's stubs and event loop
  that parses each request and returns a prebuilt answer of the same shape, with the
  request's id: what Python and grpcio cost here, nothing else;
* **raw ORT**: ``session.run`` back to back in this process, at 1 and 256 rows: the
  model's own cost;
* **Osprey** with ``--audit relaxed`` (what the targets are stated for), with
  ``--audit strict`` (the default) and with ``--audit off`` (how much of the gap is
  the audit log's), batching as ``bench/models.py`` configures it.

Scenarios: 1-row unary requests at concurrency 1 (latency) and 64 (saturation),
256-row unary requests at concurrency 8. Each number is the median of the rounds,
printed with its spread (min-max). The ratio of record is the **server CPU per
request** (the server process's user+system CPU over the window, divided by the
requests answered), Osprey's against the floor's.

Targets (this 2-core machine): Osprey (audit relaxed) <= 1.18 x the floor's server
CPU per request at 1 row c=64 and <= 1.5 x at 256 rows c=8; at c=1 Osprey's p50 <=
the floor's + 0.3 ms. MLServer, streaming, open loop, perf_analyzer, ``--workers 2``
and the plot are not part of this module yet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient

from .loadgen import LoadResult, Payload, Scenario, reference_payload
from .loadgen import run_scenario as drive
from .machine import choose_placement, machine_info, pin_this_process, system_cpu_seconds
from .models import write_decided_mlp
from .reference import OrtReference
from .server_process import BenchServer, ServerFailed

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCENARIOS = (Scenario("unary", 1, 1), Scenario("unary", 1, 64), Scenario("unary", 256, 8))
SYSTEMS = ("floor", "osprey-off", "osprey-relaxed", "osprey-strict")
TARGETS = {(1, 64): 1.18, (256, 8): 1.5}  # Osprey / floor server CPU per request
LATENCY_SLACK_MS = 0.3  # at c=1: Osprey's p50 <= the floor's + this


@dataclass
class Cell:
    round: int
    system: str
    scenario: Scenario
    result: LoadResult

    @property
    def cpu_us_per_request(self) -> float:
        busy = self.result.cpu_busy.get("server", float("nan"))
        return busy / self.result.requests_per_s * 1e6 if self.result.requests else float("nan")


def start_servers(repo: Path, root: Path, prefix: list[str]) -> dict[str, BenchServer]:
    floor = [sys.executable, "-m", "bench.floor", "--output", "PROBABILITY:FP32:1"]
    servers: dict[str, BenchServer] = {}
    for system in SYSTEMS:
        work = root / system
        work.mkdir()
        if system == "floor":
            servers[system] = BenchServer(repo, work, prefix, "WARNING", command=floor)
        else:
            servers[system] = BenchServer(repo, work, prefix, "WARNING",
                                          ["--audit", system.split("-", 1)[1]])
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


async def run_rounds(servers: dict[str, BenchServer], payloads: dict[int, Payload],
                     args: argparse.Namespace) -> list[Cell]:
    cells = []
    clients = {s: aioclient.InferenceServerClient(srv.url) for s, srv in servers.items()}
    try:
        for r in range(args.rounds):
            order = SYSTEMS if r % 2 == 0 else tuple(reversed(SYSTEMS))
            for scenario in SCENARIOS:
                for system in order:
                    server = servers[system]
                    clocks = {"server": server.cpu_seconds, "client": time.process_time,
                              "machine": system_cpu_seconds}
                    check = 0 if system == "floor" else args.check_every  # zeros, see above
                    result = await drive(clients[system], "mlp", payloads[scenario.rows],
                                         scenario, args.seconds, args.warmup, check,
                                         "per-worker", clocks)
                    cell = Cell(r + 1, system, scenario, result)
                    cells.append(cell)
                    print(f"  round {r + 1} {system:15} rows={scenario.rows:<4} "
                          f"c={scenario.concurrency:<3} {result.requests_per_s:9,.0f} req/s "
                          f" p50 {result.latency.p50_ms:7.3f} ms  p99 "
                          f"{result.latency.p99_ms:7.3f} ms  server CPU "
                          f"{cell.cpu_us_per_request:6.0f} µs/req  errors {result.errors}"
                          f"  wrong {result.wrong}", flush=True)
                    if not server.alive():
                        raise ServerFailed(f"{system} died:\n{server.stderr_tail()}")
    finally:
        for client in clients.values():
            await client.close()
    return cells


def _spread(values: list[float], fmt: str) -> str:
    med = statistics.median(values)
    return (f"{med:{fmt}}" if len(values) == 1 else
            f"{med:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})")


def summarise(cells: list[Cell], ort: dict[int, float]) -> tuple[str, dict[str, Any]]:
    """The markdown table (medians with min-max) and the targets, met or not."""
    lines = ["| system | rows | c | req/s | rows/s | p50 ms | p99 ms | p99.9 ms | "
             "server CPU µs/req | vs floor | errors |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    medians: dict[tuple[str, int, int], dict[str, float]] = {}
    for scenario in SCENARIOS:
        for system in SYSTEMS:
            mine = [c for c in cells if c.system == system and c.scenario == scenario]
            if not mine:
                continue
            cpu = [c.cpu_us_per_request for c in mine]
            medians[(system, scenario.rows, scenario.concurrency)] = {
                "requests_per_s": statistics.median(c.result.requests_per_s for c in mine),
                "p50_ms": statistics.median(c.result.latency.p50_ms for c in mine),
                "p99_ms": statistics.median(c.result.latency.p99_ms for c in mine),
                "cpu_us": statistics.median(cpu),
            }
            floor = medians.get(("floor", scenario.rows, scenario.concurrency))
            versus = (f"{statistics.median(cpu) / floor['cpu_us']:.2f}x"
                      if floor and system != "floor" else "")
            lines.append(
                f"| {system} | {scenario.rows} | {scenario.concurrency} | "
                f"{_spread([c.result.requests_per_s for c in mine], ',.0f')} | "
                f"{_spread([c.result.rows_per_s for c in mine], ',.0f')} | "
                f"{_spread([c.result.latency.p50_ms for c in mine], '.3f')} | "
                f"{_spread([c.result.latency.p99_ms for c in mine], '.3f')} | "
                f"{statistics.median(c.result.latency.p999_ms for c in mine):.3f} | "
                f"{_spread(cpu, '.0f')} | {versus} | "
                f"{sum(c.result.errors + c.result.wrong for c in mine)} |")
    for rows, us in sorted(ort.items()):
        lines.append(f"| raw ORT (in-process) | {rows} | 1 | {1e6 / us:,.0f} | "
                     f"{rows * 1e6 / us:,.0f} | {us / 1000:.3f} | | | {us:.0f} (call) | | 0 |")
    verdicts = []
    for (rows, conc), limit in TARGETS.items():
        osprey = medians.get(("osprey-relaxed", rows, conc))
        floor = medians.get(("floor", rows, conc))
        if osprey and floor:
            ratio = osprey["cpu_us"] / floor["cpu_us"]
            verdicts.append(f"server CPU per request, {rows} row(s) c={conc}: Osprey (relaxed) "
                            f"{ratio:.2f} x the floor's (target <= {limit}): "
                            f"{'met' if ratio <= limit else 'NOT met'}")
    osprey, floor = medians.get(("osprey-relaxed", 1, 1)), medians.get(("floor", 1, 1))
    if osprey and floor:
        added = osprey["p50_ms"] - floor["p50_ms"]
        met = "met" if added <= LATENCY_SLACK_MS else "NOT met"
        verdicts.append(f"p50 at c=1: Osprey (relaxed) {osprey['p50_ms']:.3f} ms, floor "
                        f"{floor['p50_ms']:.3f} ms (+{added:.3f}; target <= "
                        f"+{LATENCY_SLACK_MS}): {met}")
    summary = {"medians": {f"{s} rows={r} c={c}": v for (s, r, c), v in medians.items()},
               "raw_ort_us_per_call": ort, "verdicts": verdicts}
    return "\n".join(lines), summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--rounds", type=int, default=5)
    add("--seconds", type=float, default=3.0)
    add("--warmup", type=float, default=1.0)
    add("--check-every", type=int, default=50,
        help="compare every Nth Osprey answer with in-process ORT (smoke: every one)")
    add("--smoke", action="store_true")
    add("--output", type=Path)
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.seconds, args.warmup, args.check_every = 1, 0.4, 0.2, 1
    machine = machine_info()
    placement = choose_placement(pin=True)
    pin_this_process(placement)
    print(f"machine: {machine['cpu_model']}; placement: {placement.describe()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="osprey-compare-") as tmp:
        root = Path(tmp)
        repo = root / "models"
        ref = OrtReference(write_decided_mlp(repo))
        payloads = {rows: reference_payload(ref, rows) for rows in (1, 256)}
        ort = {rows: ref.measure(ref.make_batches(rows, 1, seed=rows)[0], args.seconds,
                                 args.warmup).latency.p50_ms * 1000 for rows in payloads}
        servers: dict[str, BenchServer] = {}
        try:
            servers = start_servers(repo, root, placement.server_prefix())
            problems = floor_answers_correctly(servers["floor"].url, payloads[1])
            cells = asyncio.run(run_rounds(servers, payloads, args))
        finally:
            codes = {s: srv.stop() for s, srv in servers.items()}
    table, summary = summarise(cells, ort)
    print()
    print(table)
    print()
    for line in summary["verdicts"]:
        print(line)
    problems += [f"{c.system} {c.scenario}: {c.result.errors} errors, {c.result.wrong} wrong"
                 for c in cells if c.result.errors or c.result.wrong]
    problems += [f"{s} exited with {code}" for s, code in codes.items() if code != 0]
    output = args.output or RESULTS_DIR / time.strftime("compare-%Y%m%d-%H%M%S.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({
        "bench": "compare", "machine": machine, "placement": placement.describe(),
        "numpy": np.__version__, "summary": summary, "table": table, "problems": problems,
        "cells": [{"round": c.round, "system": c.system, "scenario": vars(c.scenario),
                   "requests_per_s": c.result.requests_per_s, "errors": c.result.errors,
                   "wrong": c.result.wrong, "checked": c.result.checked,
                   "p50_ms": c.result.latency.p50_ms, "p99_ms": c.result.latency.p99_ms,
                   "server_cpu_us_per_request": c.cpu_us_per_request} for c in cells],
    }, indent=2))
    print(f"results: {output}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
