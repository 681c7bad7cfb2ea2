"""Memory under a long run with model reloads: is Osprey's RSS flat?

    python -m bench.soak              # 10 minutes, a model reload every 30 s
    python -m bench.soak --smoke      # CI: a few seconds, a reload every second

One Osprey server (``--audit relaxed``) of the benchmark MLP (``bench/models.py``),
pinned to one core, is driven for the whole run by 1-row unary requests at
concurrency 8 from the other core, while ``RepositoryModelLoad`` reloads the model
every ``--reload-every`` seconds (new ONNX Runtime sessions, batcher and thread pool;
the old ones retire). The resident memory of the server process and of its audit
shipper side-car is sampled every few seconds from /proc.

Target (issue 7): the server's RSS flat within +-10 % over the run: the median of the
last minute against the median of the first minute after warm-up (for a short run,
the last and first tenth). Requests must not fail across reloads either: every
error is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from .loadgen import LoadResult, Scenario, reference_payload, run_scenario
from .machine import (
    choose_placement,
    command_line,
    descendants,
    machine_info,
    pin_this_process,
)
from .models import write_decided_mlp
from .reference import OrtReference
from .server_process import BenchServer, is_audit_sidecar

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LOAD = Scenario("unary", 1, 8)
FLAT = 0.10  # the target: last window's RSS within +-10 % of the first's


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(pid: int) -> tuple[int, int]:
    """(RSS of the server and its workers, RSS of its audit side-cars)."""
    server, sidecars = rss_bytes(pid), 0
    for child in descendants(pid):
        if is_audit_sidecar(command_line(child)):
            sidecars += rss_bytes(child)
        else:
            server += rss_bytes(child)
    return server, sidecars


@dataclass
class Soak:
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (s, server, sidecar)
    reloads: int = 0
    reload_failures: list[str] = field(default_factory=list)


async def soak(server: BenchServer, payload: Any, token: str, seconds: float, warmup: float,
               reload_every: float, sample_every: float) -> tuple[Soak, LoadResult]:
    record = Soak()
    client = aioclient.InferenceServerClient(server.url)
    start = time.perf_counter()
    load = asyncio.create_task(run_scenario(client, "mlp", payload, LOAD, seconds, warmup, 50))

    async def reload() -> None:
        while not load.done():
            await asyncio.sleep(reload_every)
            if load.done():
                return
            try:
                await client.load_model("mlp", headers={"authorization": f"Bearer {token}"})
                record.reloads += 1
            except InferenceServerException as exc:
                record.reload_failures.append(str(exc))

    async def sample() -> None:
        while not load.done():
            record.samples.append((time.perf_counter() - start, *tree_rss(server.proc.pid)))
            await asyncio.sleep(sample_every)

    reloading, sampling = asyncio.create_task(reload()), asyncio.create_task(sample())
    try:
        result = await load
        await asyncio.gather(reloading, sampling)
    finally:
        await client.close()
    return record, result


def verdict(record: Soak, warmup: float, window: float) -> dict[str, Any]:
    """The first and last windows' median RSS (after the warm-up) and their ratio."""
    after = [s for s in record.samples if s[0] >= warmup]
    end = after[-1][0] if after else warmup
    first = [s[1] for s in after if s[0] < warmup + window]
    last = [s[1] for s in after if s[0] > end - window]
    if not first or not last:
        return {"error": "too few samples"}
    base, final = statistics.median(first), statistics.median(last)
    drift = final / base - 1
    return {"first_window_mb": base / 2**20, "last_window_mb": final / 2**20, "drift": drift,
            "peak_mb": max(s[1] for s in after) / 2**20,
            "sidecar_last_mb": statistics.median(s[2] for s in after[-len(last):]) / 2**20,
            "flat": abs(drift) <= FLAT}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--minutes", type=float, default=10.0)
    add("--reload-every", type=float, default=30.0, help="seconds between model reloads")
    add("--smoke", action="store_true")
    add("--output", type=Path)
    args = parser.parse_args(argv)
    seconds, warmup, sample_every = args.minutes * 60, 30.0, 5.0
    window = 60.0
    if args.smoke:
        seconds, warmup, sample_every, args.reload_every, window = 6.0, 1.0, 0.25, 1.0, 1.5
    machine = machine_info()
    placement = choose_placement(pin=True)
    pin_this_process(placement)
    print(f"machine: {machine['cpu_model']}; placement: {placement.describe()}; "
          f"{seconds:.0f} s, a reload every {args.reload_every:.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="osprey-soak-") as tmp:
        root = Path(tmp)
        payload = reference_payload(OrtReference(write_decided_mlp(root / "models")), rows=1)
        token = secrets.token_hex(16)  # RepositoryModelLoad is a control RPC: an admin's
        token_file = root / "admin.token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        server = BenchServer(root / "models", root, placement.server_prefix(), "WARNING",
                             ["--audit", "relaxed", "--admin-token-file", str(token_file)])
        try:
            server.wait_ready()
            record, result = asyncio.run(soak(server, payload, token, seconds, warmup,
                                              args.reload_every, sample_every))
        finally:
            code = server.stop()
    summary = verdict(record, warmup, window)
    problems = []
    if "error" in summary:
        problems.append(summary["error"])
    elif not summary["flat"] and not args.smoke:  # seconds say nothing about a leak
        problems.append(f"RSS moved {summary['drift']:+.1%} (target within +-{FLAT:.0%})")
    if result.errors or result.wrong:
        problems.append(f"{result.errors} failed and {result.wrong} wrong answers "
                        f"({result.error_samples[:2]})")
    if record.reload_failures:
        problems.append(f"{len(record.reload_failures)} reloads failed: "
                        f"{record.reload_failures[:2]}")
    if code != 0:
        problems.append(f"the server exited with {code}")
    print(f"{result.requests:,} requests ({result.requests_per_s:,.0f}/s), {result.errors} "
          f"errors, {record.reloads} reloads ({len(record.reload_failures)} failed)")
    if "error" not in summary:
        print(f"server RSS: first window {summary['first_window_mb']:.1f} MB, last window "
              f"{summary['last_window_mb']:.1f} MB ({summary['drift']:+.1%}; target within "
              f"+-{FLAT:.0%}: {'met' if summary['flat'] else 'NOT met'}), peak "
              f"{summary['peak_mb']:.1f} MB; audit side-car {summary['sidecar_last_mb']:.1f} MB")
    output = args.output or RESULTS_DIR / time.strftime("soak-%Y%m%d-%H%M%S.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({
        "bench": "soak", "machine": machine, "placement": placement.describe(),
        "argv": sys.argv[1:] if argv is None else argv, "seconds": seconds,
        "reload_every_s": args.reload_every, "summary": summary, "problems": problems,
        "requests": result.requests, "errors": result.errors, "wrong": result.wrong,
        "reloads": record.reloads, "reload_failures": record.reload_failures,
        "samples": [{"t": t, "server_rss": s, "sidecar_rss": c} for t, s, c in record.samples],
    }, indent=2))
    print(f"results: {output}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
