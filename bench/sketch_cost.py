"""What the fused drift sketch costs the server: the same spec model with and without it.

    python -m bench.sketch_cost            # 5 interleaved rounds (about 2.5 minutes)
    python -m bench.sketch_cost --smoke    # CI: one short round, every answer checked

One server serves two copies of the same model version: the 34-column spec of
``bench/transform.py`` (30 numeric, 4 categorical BYTES columns; F = 260 features)
fitted on its synthetic frame, in front of a 260 → 64 → 1 MLP. ``sketch`` counts
every raw value into its drift bins (the default, ``"drift_sketch": true``);
``no-sketch`` has ``"drift_sketch": false`` in its ``config.json`` and only
transforms. Clients send raw columns (FP32 and BYTES tensors, as a bank's backend
would), built once per size.

Three scenarios carry the targets of issue 4:

* 1-row unary requests at concurrency 1 (one row per execution) and 64 (batched):
  server CPU per request (the server's CPU seconds in the timed window ÷ requests
  completed in it). Target: the sketch adds ≤ 5 %.
* 256-row unary requests at concurrency 8: rows/s. Target: the sketch costs ≤ 10 %.

Each round runs every scenario on both models back to back, the order alternating
between rounds, so slow drifts of the machine hit both alike. The verdict is the
median over rounds of the paired ratio (sketch ÷ no-sketch in the same round),
printed with its spread; the server is pinned to one core and the client to the
other, as in ``bench.serving``.
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
import onnx
import tritonclient.grpc.aio as aioclient

from native import bytes_codec, transform_py
from native.transform_plan import TransformPlan, compile_plan

from .loadgen import LoadResult, Payload, Scenario, build_payload
from .loadgen import run_scenario as drive
from .machine import choose_placement, machine_info, pin_this_process, system_cpu_seconds
from .models import mlp_model, serving_config
from .reference import Batch, OrtReference
from .server_process import BenchServer, ServerFailed
from .transform import SEED, TRAIN_ROWS, build_spec, frame, training_frame

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SKETCH, PLAIN = "sketch", "no-sketch"
MODELS = {SKETCH: "spec_sketch", PLAIN: "spec_plain"}
# 1 row alone (every execution one row: nothing amortises the sketch) and at
# concurrency 64 (batched), then 256-row requests.
CPU_SCENARIOS = (Scenario("unary", 1, 1), Scenario("unary", 1, 64))
ROWS_SCENARIO = Scenario("unary", 256, 8)
SCENARIOS = (*CPU_SCENARIOS, ROWS_SCENARIO)
CPU_TARGET = 0.05  # the sketch adds at most 5 % server CPU per 1-row request
ROWS_TARGET = 0.10  # and costs at most 10 % of rows/s at 256 rows
DISTINCT_REQUESTS = 16


@dataclass(frozen=True)
class SpecModel:
    """The fitted spec, its compiled plan and the MLP behind it."""

    spec_json: str
    profile_json: str
    plan: TransformPlan
    onnx_model: onnx.ModelProto


def build_model() -> SpecModel:
    rng = np.random.default_rng(SEED)
    train = training_frame(TRAIN_ROWS, rng)
    spec = build_spec().fit(train)
    profile = spec.reference_profile(train)
    plan = compile_plan(spec, profile)
    return SpecModel(spec.to_json(), profile.to_json(), plan,
                     mlp_model(features=plan.n_features, seed=1))


def write_repository(root: Path, model: SpecModel) -> Path:
    """Both models: the same files, ``drift_sketch`` on and off in ``config.json``."""
    onnx_path = root / "model.onnx"
    for which, name in MODELS.items():
        version = root / name / "1"
        version.mkdir(parents=True)
        onnx.save(model.onnx_model, str(version / "model.onnx"))
        (version / "feature_spec.json").write_text(model.spec_json)
        (version / "reference_profile.json").write_text(model.profile_json)
        config = {**serving_config(1024), "drift_sketch": which == SKETCH}
        (root / name / "config.json").write_text(json.dumps(config, indent=2))
        onnx_path = version / "model.onnx"
    return onnx_path


def client_columns(raw: dict[str, Any], rows: int, plan: TransformPlan) -> Batch:
    """The raw frame as a client sends it: FP32 [n, 1] and object (bytes) [n, 1]."""
    batch: Batch = {}
    for name, categorical in zip(plan.column_names, plan.categorical, strict=True):
        if categorical:
            values = np.empty(rows, dtype=object)
            values[:] = bytes_codec.decode(raw[name], rows)
            batch[name] = values.reshape(rows, 1)
        else:
            batch[name] = np.asarray(raw[name], dtype=np.float32).reshape(rows, 1)
    return batch


def payload(model: SpecModel, ref: OrtReference, rows: int) -> Payload:
    """``DISTINCT_REQUESTS`` requests of ``rows`` rows; answers from the twin and ORT."""
    rng = np.random.default_rng(SEED + rows)
    batches, expected = [], []
    for _ in range(DISTINCT_REQUESTS):
        raw = frame(rows, rng)
        batch = client_columns(raw, rows, model.plan)
        columns = {
            name: raw[name] if categorical else batch[name]
            for name, categorical in zip(model.plan.column_names, model.plan.categorical,
                                         strict=True)
        }
        matrix, _ = transform_py.transform(model.plan, columns, rows, sketch=False)
        batches.append(batch)
        expected.append(ref.run({ref.inputs[0].name: matrix}))
    return build_payload(batches, expected)


@dataclass(frozen=True)
class Pair:
    """One round of one scenario: the sketch model and the no-sketch model."""

    round: int
    scenario: Scenario
    results: dict[str, LoadResult]

    def cpu_us_per_request(self, which: str) -> float:
        r = self.results[which]
        return r.cpu_busy.get("server", float("nan")) / r.requests_per_s * 1e6

    def overhead(self) -> float:
        """The sketch's cost in this round: extra CPU per request (1 row), or the share of
        rows/s lost (256 rows)."""
        if self.scenario in CPU_SCENARIOS:
            return self.cpu_us_per_request(SKETCH) / self.cpu_us_per_request(PLAIN) - 1
        return 1 - self.results[SKETCH].rows_per_s / self.results[PLAIN].rows_per_s


async def run_rounds(url: str, payloads: dict[int, Payload], args: argparse.Namespace,
                     server: BenchServer) -> list[Pair]:
    client = aioclient.InferenceServerClient(url)
    clocks = {"server": server.cpu_seconds, "client": time.process_time,
              "machine": system_cpu_seconds}
    pairs: list[Pair] = []
    try:
        for name in MODELS.values():
            if not await client.is_model_ready(name):
                raise ServerFailed(f"model {name!r} is not ready:\n{server.stderr_tail()}")
        for r in range(args.rounds):
            order = (SKETCH, PLAIN) if r % 2 == 0 else (PLAIN, SKETCH)
            for scenario in SCENARIOS:
                results = {}
                for which in order:
                    result = await drive(client, MODELS[which], payloads[scenario.rows],
                                         scenario, args.seconds, args.warmup, args.check_every,
                                         "per-worker", clocks)
                    results[which] = result
                    if not server.alive():
                        raise ServerFailed(f"server died:\n{server.stderr_tail()}")
                pair = Pair(r + 1, scenario, results)
                pairs.append(pair)
                print(f"  round {r + 1} rows={scenario.rows:<3} c={scenario.concurrency:<2} "
                      + "  ".join(f"{w}: {pair.results[w].requests_per_s:8,.0f} req/s "
                                  f"{pair.cpu_us_per_request(w):6.0f} µs CPU"
                                  for w in (SKETCH, PLAIN))
                      + f"  overhead {pair.overhead():+.1%}", flush=True)
    finally:
        await client.close()
    return pairs


def _spread(values: list[float], fmt: str) -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))} … " \
           f"{fmt.format(max(values))})"


def verdict(pairs: list[Pair]) -> tuple[str, dict[str, Any]]:
    """The markdown table and the per-target summary."""
    lines = [
        "| scenario | measure | sketch | no sketch | sketch cost (median of rounds) | target |",
        "|---|---|--:|--:|--:|---|",
    ]
    summary: dict[str, Any] = {}
    for scenario in SCENARIOS:
        target = CPU_TARGET if scenario in CPU_SCENARIOS else ROWS_TARGET
        mine = [p for p in pairs if p.scenario == scenario]
        if not mine:
            continue
        cost = [p.overhead() for p in mine]
        median_cost = statistics.median(cost)
        if scenario in CPU_SCENARIOS:
            measure = "server CPU µs / request"
            values = {w: [p.cpu_us_per_request(w) for p in mine] for w in (SKETCH, PLAIN)}
            fmt = "{:.0f}"
        else:
            measure = "rows/s"
            values = {w: [p.results[w].rows_per_s for p in mine] for w in (SKETCH, PLAIN)}
            fmt = "{:,.0f}"
        met = median_cost <= target
        lines.append(
            f"| {scenario.rows} row{'s' if scenario.rows > 1 else ''}, unary, "
            f"c={scenario.concurrency} | {measure} | {_spread(values[SKETCH], fmt)} "
            f"| {_spread(values[PLAIN], fmt)} | {_spread(cost, '{:+.1%}')} "
            f"| ≤ {target:.0%}: {'met' if met else 'NOT met'} |")
        summary[f"rows_{scenario.rows}_c{scenario.concurrency}"] = {
            "measure": measure, "target": target, "median_cost": median_cost,
            "costs": cost, "met": met, "values": values,
        }
    return "\n".join(lines), summary


def smoke_problems(pairs: list[Pair], exit_code: int | None) -> list[str]:
    problems = []
    for p in pairs:
        for which, r in p.results.items():
            where = f"{which} rows={p.scenario.rows}"
            if r.errors or r.wrong:
                problems.append(f"{where}: {r.errors} errors, {r.wrong} wrong answers "
                                f"{r.error_samples}")
            if r.checked == 0:
                problems.append(f"{where}: no answer checked")
    if exit_code != 0:
        problems.append(f"server exited with {exit_code} on SIGTERM")
    return problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sketch_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    add("--seconds", type=float, default=3.0, help="timed window per cell (default 3)")
    add("--warmup", type=float, default=1.0, help="warm-up before each window (default 1)")
    add("--check-every", type=int, default=50, help="compare every Nth answer with the twin")
    add("--no-pin", action="store_true", help="do not pin the server and the client")
    add("--smoke", action="store_true", help="CI: one round of 0.4 s windows, all checked")
    add("--output", type=Path, help="JSON path (default bench/results/sketch-<time>.json)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.seconds, args.warmup, args.check_every = 1, 0.4, 0.2, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    machine = machine_info()
    placement = choose_placement(pin=not args.no_pin)
    pin_this_process(placement)
    print(f"machine: {machine['cpu_model']}, {machine['logical_cpus']} logical CPUs; "
          f"placement: {placement.describe()}", flush=True)
    model = build_model()
    print(f"spec: {model.plan.n_columns} raw columns -> {model.plan.n_features} features, "
          f"{model.plan.n_bins} drift bins", flush=True)
    pairs: list[Pair] = []
    server_info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="osprey-sketch-") as tmp:
        workdir = Path(tmp)
        onnx_path = write_repository(workdir / "models", model)
        ref = OrtReference(onnx_path)
        payloads = {rows: payload(model, ref, rows) for rows in {s.rows for s in SCENARIOS}}
        server = BenchServer(workdir / "models", workdir, placement.server_prefix(), "INFO")
        with server:
            try:
                url = server.wait_ready()
                pairs = asyncio.run(run_rounds(url, payloads, args, server))
            except ServerFailed as exc:
                print(f"SERVER PROBLEM: {exc}", file=sys.stderr)
                server_info["failure"] = str(exc)
            finally:
                server_info["exit_code"] = server.stop()
                server_info["stderr_tail"] = server.stderr_tail(40)
    table, summary = verdict(pairs)
    print()
    print(table)
    output = args.output or RESULTS_DIR / time.strftime("sketch-%Y%m%d-%H%M%S.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({
        "bench": "sketch_cost", "argv": sys.argv[1:] if argv is None else argv,
        "machine": machine, "placement": placement.describe(),
        "settings": {"rounds": args.rounds, "seconds": args.seconds, "warmup": args.warmup,
                     "model_config": serving_config(1024)},
        "server": server_info, "table": table, "summary": summary,
        "rounds": [
            {"round": p.round, "scenario": vars(p.scenario), "overhead": p.overhead(),
             **{w: {"requests_per_s": r.requests_per_s, "rows_per_s": r.rows_per_s,
                    "cpu_us_per_request": p.cpu_us_per_request(w), "errors": r.errors,
                    "wrong": r.wrong, "checked": r.checked, "p50_ms": r.latency.p50_ms,
                    "p99_ms": r.latency.p99_ms}
                for w, r in p.results.items()}}
            for p in pairs
        ],
    }, indent=2, default=str))
    print(f"\nresults: {output}")
    if "failure" in server_info:
        return 1
    if args.smoke:
        problems = smoke_problems(pairs, server_info.get("exit_code"))
        if problems:
            print("smoke FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
        print("smoke ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
