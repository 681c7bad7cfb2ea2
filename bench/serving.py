"""Serving benchmark: the real Osprey server under closed-loop tritonclient load.

    python -m bench.serving            # full run (about a minute per model)
    python -m bench.serving --smoke    # CI: a few short scenarios, every answer checked

Builds a model repository in a temporary folder (the MLP of bench/models.py, plus the
demo fraud model when it exists), measures raw in-process ONNX Runtime on each model,
starts ``python -m server serve`` as a subprocess, drives it with bench/loadgen.py,
prints a markdown table and writes JSON to bench/results/serving-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import tritonclient.grpc.aio as aioclient

from .loadgen import STREAM_MODES, LoadResult, Payload, Scenario, StreamMode, build_payload
from .loadgen import run_scenario as drive
from .machine import choose_placement, machine_info, pin_this_process, system_cpu_seconds
from .models import BenchModel, find_fraud_model, serving_config, write_repository
from .reference import Batch, OrtReference, ReferenceResult
from .report import ModelResults, markdown_table, other_load, write_json
from .server_process import BenchServer, ServerFailed

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DISTINCT_REQUESTS = 16  # prebuilt requests per size, cycled through
FULL_SCENARIOS = [
    Scenario(api, rows, concurrency)
    for api in ("unary", "stream")
    for rows, concurrency in ((1, 1), (1, 8), (1, 64), (256, 8))
]
SMOKE_SCENARIOS = [Scenario("unary", 1, 8), Scenario("stream", 1, 8), Scenario("unary", 256, 8)]
REFERENCE_BATCHES = (1, 256)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; ``--smoke`` overrides the timing and checking ones."""
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--seconds", type=float, default=3.0, help="timed window per scenario (default 3)")
    add("--warmup", type=float, default=1.0, help="warm-up before each window (default 1)")
    add("--smoke", action="store_true",
        help="CI mode: 0.5 s windows, a few scenarios, every answer checked; MLP only")
    add("--fraud-model", type=Path,
        help="also bench this ONNX file as 'fraud' (default: $OSPREY_HOME or ~/.osprey "
             "models/fraud/1/model.onnx when present)")
    add("--no-fraud", action="store_true", help="bench the MLP only")
    add("--stream-mode", choices=STREAM_MODES, default="per-worker",
        help="per-worker: one stream per worker, one request in flight on each (default); "
             "shared: one stream carrying all in-flight requests")
    add("--no-pin", action="store_true", help="do not pin the server and the client to cores")
    add("--check-every", type=int, default=50,
        help="compare every Nth answer with in-process ORT (smoke: every answer)")
    add("--server-log-level", default="INFO", help="the server's --log-level")
    add("--output", type=Path, help="JSON path (default bench/results/serving-<time>.json)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.warmup, args.check_every, args.no_fraud = 0.5, 0.2, 1, True
    return args


def measure_reference(
    ref: OrtReference, batches: dict[int, list[Batch]], seconds: float, warmup: float
) -> list[ReferenceResult]:
    """In-process ORT at every reference batch size, on the first prebuilt batch."""
    return [ref.measure(batches[rows][0], seconds, warmup) for rows in REFERENCE_BATCHES]


async def drive_model(
    url: str,
    model: str,
    payloads: dict[int, Payload],
    scenarios: list[Scenario],
    args: argparse.Namespace,
    server: BenchServer,
) -> list[LoadResult]:
    """Run every scenario against ``model``; stops early if the server dies."""
    client = aioclient.InferenceServerClient(url)
    clocks = {
        "server": server.cpu_seconds,
        "client": time.process_time,
        "machine": system_cpu_seconds,
    }
    results: list[LoadResult] = []
    try:
        if not await client.is_model_ready(model):
            raise ServerFailed(f"model {model!r} is not ready:\n{server.stderr_tail()}")
        for scenario in scenarios:
            mode: StreamMode = args.stream_mode
            result = await drive(client, model, payloads[scenario.rows], scenario,
                                 args.seconds, args.warmup, args.check_every, mode, clocks)
            results.append(result)
            print(f"  {model} {scenario.api:6} rows={scenario.rows:<4} "
                  f"c={scenario.concurrency:<3} {result.requests_per_s:9,.0f} req/s  "
                  f"p99 {result.latency.p99_ms:7.3f} ms  errors {result.errors}  "
                  f"CPU server {result.cpu_busy.get('server', 0):.0%} "
                  f"client {result.cpu_busy.get('client', 0):.0%} "
                  f"other {other_load(result):.0%}", flush=True)
            for sample in result.error_samples:
                print(f"    error: {sample}", flush=True)
            if not server.alive():
                raise ServerFailed(f"server died during {scenario}:\n{server.stderr_tail()}")
    finally:
        await client.close()
    return results


def prepare(
    model: BenchModel,
) -> tuple[OrtReference, dict[int, list[Batch]], dict[int, Payload]]:
    """The ORT session, NumPy batches per size, and the prebuilt requests per size."""
    ref = OrtReference(model.onnx_path)
    batches = {rows: ref.make_batches(rows, DISTINCT_REQUESTS, seed=rows)
               for rows in REFERENCE_BATCHES}
    payloads = {rows: build_payload(b, [ref.run(x) for x in b]) for rows, b in batches.items()}
    return ref, batches, payloads


def smoke_failures(results: list[ModelResults], exit_code: int | None) -> list[str]:
    """Why the smoke run failed (empty when it passed)."""
    problems = []
    for m in results:
        for r in m.serving:
            s = r.scenario
            where = f"{m.model} {s.api} rows={s.rows} c={s.concurrency}"
            if r.errors or r.wrong:
                problems.append(f"{where}: {r.errors} errors, {r.wrong} wrong answers")
            if r.checked == 0 or r.requests == 0:
                problems.append(f"{where}: nothing completed ({r.checked} checked)")
    if exit_code != 0:
        problems.append(f"server exited with {exit_code} on SIGTERM")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    machine = machine_info()  # before pinning narrows the usable cores
    placement = choose_placement(pin=not args.no_pin)
    pin_this_process(placement)  # before any gRPC or ORT thread exists
    print(f"machine: {machine['cpu_model']}, {machine['logical_cpus']} logical CPUs; python "
          f"{machine['python']}, onnxruntime {machine['onnxruntime']}, grpcio {machine['grpcio']}")
    print(f"placement: {placement.describe()}", flush=True)
    scenarios = SMOKE_SCENARIOS if args.smoke else FULL_SCENARIOS
    queue_size = max(1024, 4 * max(s.concurrency for s in scenarios))
    fraud = None if args.no_fraud else find_fraud_model(args.fraud_model)
    if fraud is None and not args.smoke:
        print("fraud model: not found (run `osprey demo` once, or pass --fraud-model); MLP only")

    results: list[ModelResults] = []
    server_info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="osprey-bench-") as tmp:
        workdir = Path(tmp)
        models = write_repository(workdir / "models", fraud, queue_size)
        prepared = {m.name: prepare(m) for m in models}
        reference: dict[str, list[ReferenceResult]] = {}
        ref_seconds = min(args.seconds, 0.3) if args.smoke else args.seconds
        for m in models:
            ref, batches, _ = prepared[m.name]
            print(f"ORT in-process reference: {m.name}", flush=True)
            reference[m.name] = measure_reference(ref, batches, ref_seconds, args.warmup)
        server = BenchServer(workdir / "models", workdir, placement.server_prefix(),
                             args.server_log_level)
        with server:
            try:
                url = server.wait_ready()
                print(f"server ready at {url}: {' '.join(server.command)}", flush=True)
                for m in models:
                    served = asyncio.run(drive_model(url, m.name, prepared[m.name][2],
                                                     scenarios, args, server))
                    results.append(ModelResults(m.name, reference[m.name], served))
            except ServerFailed as exc:
                print(f"SERVER PROBLEM: {exc}", file=sys.stderr)
                server_info["failure"] = str(exc)
            finally:
                server_info["exit_code"] = server.stop()
                server_info["command"] = server.command
                server_info["stderr_tail"] = server.stderr_tail(40)

    table = markdown_table(results)
    print()
    print(table)
    output = args.output or RESULTS_DIR / time.strftime("serving-%Y%m%d-%H%M%S.json")
    header = {
        "bench": "serving",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "argv": sys.argv[1:] if argv is None else argv,
        "machine": machine,
        "placement": {**asdict(placement), "description": placement.describe()},
        "settings": {
            "seconds": args.seconds, "warmup": args.warmup, "smoke": args.smoke,
            "stream_mode": args.stream_mode, "check_every": args.check_every,
            "model_config": serving_config(queue_size),
        },
        "server": server_info,
        "table": table,
    }
    write_json(output, header, results)
    print(f"\nresults: {output}")
    print(f"server exit code on SIGTERM: {server_info.get('exit_code')}")
    if "failure" in server_info:
        return 1
    if args.smoke:
        problems = smoke_failures(results, server_info.get("exit_code"))
        if problems:
            print("smoke FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
        print("smoke ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
