"""Triton's perf_analyzer against the real Osprey server, unchanged.

    python -m bench.perf_analyzer                               # unary, concurrency 1:8:... sweep
    python -m bench.perf_analyzer --streaming                   # ModelStreamInfer
    python -m bench.perf_analyzer --workers 2                   # osprey serve --workers 2
    python -m bench.perf_analyzer --smoke                       # CI: a few seconds
    python -m bench.perf_analyzer -- --input-data zero -b 8     # extra perf_analyzer flags

Writes the benchmark MLP repository (bench/models.py) into a temporary folder, starts
``python -m server serve`` (bench/server_process.py), runs perf_analyzer from the venv that
``bench/perf_analyzer_setup.sh`` made (``make perf-analyzer``), parses its CSV (``-f``) and
stdout, and prints client-side numbers beside the server-side breakdown (queue, compute
input/infer/output) that perf_analyzer reads from our ModelStatistics. The ModelStatistics
delta over the whole run is read here too, to show that the counts perf_analyzer reports
are ours. JSON goes to bench/results/perf_analyzer-<timestamp>.json.

perf_analyzer's default stabilisation (5 s time windows, ±10%) rarely settles on 2 shared
cores; this runs ``-s 50 --measurement-mode count_windows`` by default (see bench/README.md).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .machine import choose_placement, machine_info
from .models import MLP_NAME, write_repository
from .server_process import REPO_ROOT, BenchServer, ServerFailed

SETUP_COMMAND = "bash bench/perf_analyzer_setup.sh (or: make perf-analyzer)"
DEFAULT_VENV = REPO_ROOT / ".venv-perf"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
STATS_FIELDS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


class PerfAnalyzerMissing(RuntimeError):
    """perf_analyzer is not installed (or cannot load its libraries)."""


@dataclass(frozen=True)
class PerfAnalyzer:
    """The binary and the environment it needs to load ``libcudart.so.12``."""

    binary: Path
    library_dir: Path

    def env(self) -> dict[str, str]:
        paths = [str(self.library_dir), *filter(None, [os.environ.get("LD_LIBRARY_PATH")])]
        return {**os.environ, "LD_LIBRARY_PATH": ":".join(paths)}

    def version(self) -> str:
        out = subprocess.run([str(self.binary), "--version"], env=self.env(),
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise PerfAnalyzerMissing(
                f"{self.binary} --version failed ({out.returncode}): "
                f"{(out.stderr or out.stdout).strip()}\nrun: {SETUP_COMMAND}"
            )
        return (out.stdout + out.stderr).strip()  # 2.51 prints its version on stderr


def locate(venv: Path | None = None) -> PerfAnalyzer:
    """perf_analyzer in ``venv`` ($PERF_ANALYZER_VENV, default .venv-perf), checked to run."""
    venv = venv or Path(os.environ.get("PERF_ANALYZER_VENV") or DEFAULT_VENV)
    if not venv.is_absolute():
        venv = REPO_ROOT / venv
    binary = venv / "bin" / "perf_analyzer"
    libs = sorted(venv.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    if not binary.is_file() or not libs:
        raise PerfAnalyzerMissing(
            f"perf_analyzer is not installed in {venv} (no bin/perf_analyzer or no "
            f"nvidia/cuda_runtime/lib); run: {SETUP_COMMAND}"
        )
    pa = PerfAnalyzer(binary, libs[0])
    pa.version()
    return pa


# ---------------------------------------------------------------- perf_analyzer's output

@dataclass
class ConcurrencyResult:
    """One concurrency level as perf_analyzer reported it (latencies in µs)."""

    concurrency: int
    infer_per_s: float
    client_avg_us: float
    client_p50_us: float
    client_p90_us: float
    client_p99_us: float
    server_queue_us: float
    server_compute_input_us: float
    server_compute_infer_us: float
    server_compute_output_us: float
    client_requests: int = 0  # "Request count" in the measurement windows
    server: dict[str, float] = field(default_factory=dict)  # the stdout "Server:" block


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def parse_csv(text: str) -> list[ConcurrencyResult]:
    """perf_analyzer's ``-f`` file: one row per concurrency level, by concurrency."""
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        if not row.get("Concurrency"):
            continue
        rows.append(ConcurrencyResult(
            concurrency=int(row["Concurrency"]),
            infer_per_s=_num(row["Inferences/Second"]),
            client_avg_us=_num(row["Avg latency"]),
            client_p50_us=_num(row["p50 latency"]),
            client_p90_us=_num(row["p90 latency"]),
            client_p99_us=_num(row["p99 latency"]),
            server_queue_us=_num(row["Server Queue"]),
            server_compute_input_us=_num(row["Server Compute Input"]),
            server_compute_infer_us=_num(row["Server Compute Infer"]),
            server_compute_output_us=_num(row["Server Compute Output"]),
        ))
    return sorted(rows, key=lambda r: r.concurrency)  # the file is sorted by throughput


_BLOCK = re.compile(r"^Request concurrency: (\d+)\s*$", re.MULTILINE)
_SERVER_COUNTS = {
    "inference_count": re.compile(r"Inference count: ([\d,]+)"),
    "execution_count": re.compile(r"Execution count: ([\d,]+)"),
    "success_count": re.compile(r"Successful request count: ([\d,]+)"),
}
_SERVER_LATENCY = re.compile(
    r"Avg request latency: (?P<request>\d+) usec \(overhead (?P<overhead>\d+) usec"
    r" \+ queue (?P<queue>\d+) usec \+ compute input (?P<compute_input>\d+) usec"
    r" \+ compute infer (?P<compute_infer>\d+) usec \+ compute output (?P<compute_output>\d+)"
    r" usec\)"
)


def parse_stdout(text: str) -> dict[int, dict[str, float]]:
    """Per concurrency: client request count and the "Server:" block of perf_analyzer's stdout."""
    found: dict[int, dict[str, float]] = {}
    marks = list(_BLOCK.finditer(text))
    for i, mark in enumerate(marks):
        block = text[mark.end(): marks[i + 1].start() if i + 1 < len(marks) else len(text)]
        client, _, server = block.partition("Server:")
        values: dict[str, float] = {}
        count = re.search(r"Request count: ([\d,]+)", client)
        if count:
            values["client_requests"] = _num(count.group(1))
        for key, pattern in _SERVER_COUNTS.items():
            match = pattern.search(server)
            if match:
                values[key] = _num(match.group(1))
        latency = _SERVER_LATENCY.search(server)
        if latency:
            values.update({f"{k}_us": float(v) for k, v in latency.groupdict().items()})
        found[int(mark.group(1))] = values
    return found


# ---------------------------------------------------------------- our ModelStatistics

def model_statistics(url: str, model: str) -> dict[str, int]:
    """Our ModelStatistics for ``model`` (summed over versions): counts and nanoseconds."""
    import tritonclient.grpc as grpcclient  # here: the bench process never loads our stubs

    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(model, as_json=True)
    finally:
        client.close()
    total: dict[str, int] = {"inference_count": 0, "execution_count": 0}
    for entry in stats.get("model_stats", []):
        total["inference_count"] += int(entry.get("inference_count", 0))
        total["execution_count"] += int(entry.get("execution_count", 0))
        infer = entry.get("inference_stats", {})
        for name in STATS_FIELDS:
            part = infer.get(name, {})
            total[f"{name}_count"] = total.get(f"{name}_count", 0) + int(part.get("count", 0))
            total[f"{name}_ns"] = total.get(f"{name}_ns", 0) + int(part.get("ns", 0))
    return total


def statistics_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """What moved during the run, with average µs per successful request."""
    delta: dict[str, float] = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    successes = delta.get("success_count", 0)
    for name in ("queue", "compute_input", "compute_infer", "compute_output", "success"):
        count = delta.get(f"{name}_count", 0) or successes
        delta[f"{name}_avg_us"] = delta.get(f"{name}_ns", 0) / count / 1e3 if count else 0.0
    return delta


def wait_model_ready(url: str, model: str, timeout: float = 60.0) -> None:
    """The server and ``model`` answer ready (every worker is up, with --workers)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                if client.is_server_ready() and client.is_model_ready(model):
                    return
            except Exception:  # a worker still starting: ask again
                pass
            time.sleep(0.1)
    finally:
        client.close()
    raise ServerFailed(f"model {model!r} not ready at {url} after {timeout:.0f}s")


# ---------------------------------------------------------------- the run

def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Our options, and whatever follows ``--`` (passed to perf_analyzer as is)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m bench.perf_analyzer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--streaming", action="store_true", help="ModelStreamInfer (perf_analyzer --streaming)")
    add("--workers", type=int, default=1, help="osprey serve --workers N (default 1: no flag)")
    add("--concurrency-range", default="1:8:1",
        help="perf_analyzer --concurrency-range start:end:step (default 1:8:1)")
    add("--request-count", type=int, default=500,
        help="--measurement-request-count: requests per count window (default 500)")
    add("--interval-ms", type=int, default=2000,
        help="-p: measurement window limit in ms (default 2000)")
    add("--stability", type=int, default=50, help="-s: stability percentage (default 50)")
    add("--max-trials", type=int, default=10, help="--max-trials (default 10)")
    add("--batch-size", type=int, default=1, help="-b: rows per request (default 1)")
    add("--smoke", action="store_true",
        help="CI mode: concurrency 2, 100-request windows, a few seconds")
    add("--no-pin", action="store_true",
        help="do not pin the server (CPU 0) and perf_analyzer (CPU 1); with --workers > 1 "
             "nothing is pinned anyway")
    add("--timeout", type=float, default=300.0, help="kill perf_analyzer after this (s)")
    add("--server-log-level", default="WARNING", help="the server's --log-level")
    add("--perf-analyzer-venv", type=Path, help="default $PERF_ANALYZER_VENV or .venv-perf")
    add("--output", type=Path, help="JSON path (default bench/results/perf_analyzer-<time>.json)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.concurrency_range, args.request_count, args.interval_ms = "2", 100, 1000
    return args, extra


def perf_command(
    pa: PerfAnalyzer, url: str, csv_path: Path, args: argparse.Namespace, extra: list[str]
) -> list[str]:
    command = [
        str(pa.binary), "-m", MLP_NAME, "-u", url, "-i", "grpc",
        "-b", str(args.batch_size),
        "--concurrency-range", args.concurrency_range,
        "-s", str(args.stability),
        "--measurement-mode", "count_windows",
        "--measurement-request-count", str(args.request_count),
        "-p", str(args.interval_ms),
        "--max-trials", str(args.max_trials),
        "-f", str(csv_path), "--verbose-csv",
    ]
    if args.streaming:
        command.append("--streaming")
    return command + extra


def print_table(rows: list[ConcurrencyResult]) -> str:
    lines = [
        "| conc. | infer/s | client avg µs | p50 µs | p99 µs | server queue µs "
        "| compute input µs | compute infer µs | compute output µs | server overhead µs "
        "| inferences/exec |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        overhead = r.server.get("overhead_us")
        per_exec = (r.server["inference_count"] / r.server["execution_count"]
                    if r.server.get("execution_count") else None)
        lines.append(
            f"| {r.concurrency} | {r.infer_per_s:,.0f} | {r.client_avg_us:,.0f} "
            f"| {r.client_p50_us:,.0f} | {r.client_p99_us:,.0f} | {r.server_queue_us:,.0f} "
            f"| {r.server_compute_input_us:,.0f} | {r.server_compute_infer_us:,.0f} "
            f"| {r.server_compute_output_us:,.0f} "
            f"| {'—' if overhead is None else f'{overhead:,.0f}'} "
            f"| {'—' if per_exec is None else f'{per_exec:.1f}'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    started = time.time()
    try:
        pa = locate(args.perf_analyzer_venv)
        version = pa.version()
    except PerfAnalyzerMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    machine = machine_info()
    placement = choose_placement(pin=not args.no_pin and args.workers == 1)
    client_prefix = ([] if placement.client_cpu is None
                     else ["taskset", "-c", str(placement.client_cpu)])
    server_args = ["--workers", str(args.workers)] if args.workers != 1 else []
    where = placement.describe().replace("load generator and in-process ORT", "perf_analyzer")
    print(f"machine: {machine['cpu_model']}, {machine['logical_cpus']} logical CPUs; "
          f"{version}; placement: {where}", flush=True)

    record: dict[str, Any] = {
        "bench": "perf_analyzer",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "argv": sys.argv[1:] if argv is None else argv,
        "machine": machine, "perf_analyzer": version,
        "placement": asdict(placement), "streaming": args.streaming, "workers": args.workers,
    }
    with tempfile.TemporaryDirectory(prefix="osprey-perf-") as tmp:
        workdir = Path(tmp)
        write_repository(workdir / "models", None, max_queue_size=1024)
        server = BenchServer(workdir / "models", workdir, placement.server_prefix(),
                             args.server_log_level, server_args)
        with server:
            try:
                url = server.wait_ready()
                wait_model_ready(url, MLP_NAME)
                csv_path = workdir / "perf.csv"
                command = perf_command(pa, url, csv_path, args, extra)
                print(f"server: {shlex.join(server.command)}\nperf_analyzer: "
                      f"LD_LIBRARY_PATH={pa.library_dir} {shlex.join(client_prefix + command)}",
                      flush=True)
                before = model_statistics(url, MLP_NAME)
                t0 = time.monotonic()
                try:
                    out = subprocess.run(client_prefix + command, env=pa.env(),
                                         capture_output=True, text=True, timeout=args.timeout)
                    rc, stdout, stderr = out.returncode, out.stdout, out.stderr
                except subprocess.TimeoutExpired as exc:
                    rc, stdout, stderr = 124, str(exc.stdout or ""), str(exc.stderr or "")
                record["perf_seconds"] = round(time.monotonic() - t0, 2)
                after = model_statistics(url, MLP_NAME)
                csv_text = csv_path.read_text() if csv_path.is_file() else ""
            except ServerFailed as exc:
                print(f"SERVER PROBLEM: {exc}", file=sys.stderr)
                record["server_failure"] = str(exc)
                return 1
            finally:
                record["server_exit_code"] = server.stop()
                record["server_command"] = server.command
                record["server_stderr_tail"] = server.stderr_tail(40)

    rows = parse_csv(csv_text)
    for concurrency, values in parse_stdout(stdout).items():
        for row in rows:
            if row.concurrency == concurrency:
                row.client_requests = int(values.pop("client_requests", 0))
                row.server = values
    delta = statistics_delta(before, after)
    table = print_table(rows)
    record.update({
        "command": command, "ld_library_path": str(pa.library_dir), "exit_code": rc,
        "rows": [asdict(r) for r in rows], "model_statistics_delta": delta,
        "stdout_tail": stdout[-6000:], "stderr_tail": stderr[-3000:], "table": table,
    })
    print(f"\nperf_analyzer exit code {rc} after {record['perf_seconds']} s"
          f"{' (stdout/stderr tail below)' if rc else ''}")
    if rc:
        print(stdout[-3000:] + stderr[-3000:])
    print(f"\n{'streaming' if args.streaming else 'unary'}, workers {args.workers}:\n{table}")
    print(f"\nour ModelStatistics over the run (perf_analyzer's warm-up included): "
          f"{delta.get('success_count', 0):,.0f} requests, "
          f"{delta.get('inference_count', 0):,.0f} inferences in "
          f"{delta.get('execution_count', 0):,.0f} executions; avg µs: queue "
          f"{delta['queue_avg_us']:.0f}, compute input {delta['compute_input_avg_us']:.0f}, "
          f"infer {delta['compute_infer_avg_us']:.0f}, output {delta['compute_output_avg_us']:.0f}"
          f"; failures {delta.get('fail_count', 0):,.0f}")
    print(f"server exit code on SIGTERM: {record['server_exit_code']}")
    output = args.output or RESULTS_DIR / time.strftime("perf_analyzer-%Y%m%d-%H%M%S.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"results: {output}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
