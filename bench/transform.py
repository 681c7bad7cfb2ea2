"""Feature-transform benchmark: the Cython kernel beside its NumPy twin, in one run.

    python -m bench.transform            # full run (about a minute)
    python -m bench.transform --smoke    # a few short timings, outputs checked equal

The spec has 30 numeric columns (impute + standardize; every third also clipped,
every fifth also log1p) and 4 categorical BYTES columns (2 one-hot vocabularies of
50 merchant-like ids, 2 one-hot hashes into 64 buckets), fitted on a synthetic
training frame; F = 30 + 2 x 51 + 2 x 64 = 260 features. Each batch size (1, 64,
1024, 65536 rows) is timed for both implementations with and without the fused
sketch (counts added into one window array, as the server does). Batches have a
few NaNs, empty strings and values outside the vocabulary.

Each cell is the best of ``--repeats`` loops sized to run about ``--seconds``
(timeit's convention; the GC is off while timing), the cells of one batch size
timed in turns so that a busy moment on the machine hits all of them. The 1-row
time is the fixed cost per call. Prints a markdown table with the machine.
"""

from __future__ import annotations

import os

# One thread, as the table says: OpenBLAS (used by NumPy while fitting) otherwise
# leaves worker threads spinning on the other cores while the timings run.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from typing import Any

import numpy as np

from native import transform as selected
from native import transform_py
from native.feature_fit import encode_bytes
from native.feature_spec import (
    CategoricalColumn,
    Clip,
    FeatureSpec,
    HashBuckets,
    Impute,
    NumericColumn,
    Standardize,
    Vocabulary,
)
from native.transform_plan import TransformPlan, compile_plan

from .machine import cpu_model

SIZES: tuple[int, ...] = (1, 64, 1024, 65536)
N_NUMERIC = 30
TRAIN_ROWS = 20_000
SEED = 20261127


def build_spec() -> FeatureSpec:
    """The benchmark's template: 30 numeric and 4 categorical columns."""
    columns: list[NumericColumn | CategoricalColumn] = []
    for i in range(N_NUMERIC):
        columns.append(NumericColumn(
            f"n{i:02d}",
            impute=Impute("median" if i % 2 else "mean"),
            clip=Clip(0.0, None) if i % 3 == 0 else None,
            log1p=i % 5 == 0,
            standardize=Standardize(),
        ))
    for name in ("merchant", "mcc"):
        columns.append(CategoricalColumn(name, Vocabulary(max_size=50, min_count=1)))
    for seed, name in enumerate(("card_id", "device_id"), start=11):
        columns.append(CategoricalColumn(name, HashBuckets(64, seed=seed), personal=True))
    return FeatureSpec(tuple(columns))


def frame(rows: int, rng: np.random.Generator) -> dict[str, Any]:
    """Raw columns as a client sends them: FP32 arrays and KServe BYTES buffers."""
    out: dict[str, Any] = {}
    for i in range(N_NUMERIC):
        x = rng.lognormal(2.0, 1.0, rows) if i % 5 == 0 else rng.normal(i, 1.0 + i, rows)
        x = x.astype(np.float32)
        x[rng.random(rows) < 0.02] = np.nan
        out[f"n{i:02d}"] = x
    # ~60 ids per vocabulary column: 50 are learned, the rest (and "") are out of it
    merchants = [f"M{k:08d}".encode() for k in rng.zipf(1.3, rows) % 60]
    mccs = [f"{5000 + k}".encode() for k in rng.integers(0, 60, rows)]
    for j in rng.integers(0, rows, max(rows // 100, 0)):
        merchants[j] = b""
    cards = [f"card-{k:012d}".encode() for k in rng.integers(0, 10**9, rows)]
    devices = [f"dev-{k:x}".encode() for k in rng.integers(0, 5000, rows)]
    out.update(merchant=encode_bytes(merchants), mcc=encode_bytes(mccs),
               card_id=encode_bytes(cards), device_id=encode_bytes(devices))
    return out


def training_frame(rows: int, rng: np.random.Generator) -> dict[str, Any]:
    """The same columns as Python values, for ``FeatureSpec.fit``."""
    batch = frame(rows, rng)
    for name in ("merchant", "mcc", "card_id", "device_id"):
        batch[name] = transform_py.split_bytes(name, batch[name], rows, 1 << 16)
        e = batch[name]
        batch[name] = [bytes(e.data[s:s + n]) for s, n in zip(e.starts, e.lengths, strict=True)]
    return batch


def build_plan() -> TransformPlan:
    rng = np.random.default_rng(SEED)
    train = training_frame(TRAIN_ROWS, rng)
    spec = build_spec().fit(train)
    return compile_plan(spec, spec.reference_profile(train))


@dataclass(frozen=True)
class Cell:
    rows: int
    impl: str
    sketch: bool
    seconds: float  # per call

    @property
    def ns_per_row(self) -> float:
        return self.seconds * 1e9 / self.rows

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds


def calibrate(call: Callable[[], object], seconds: float) -> int:
    """How many calls take about ``seconds``."""
    call()
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            call()
        took = time.perf_counter() - start
        if took >= seconds / 4 or loops >= 1 << 24:
            return max(1, int(loops * seconds / max(took, 1e-9)))
        loops *= 2


def best_times(calls: list[Callable[[], object]], seconds: float, repeats: int) -> list[float]:
    """Seconds per call of each callable: the best of ``repeats`` loops of about
    ``seconds``, taken in turns (one loop of each per round), so a busy spell on the
    machine hits every implementation alike. The GC is off while timing."""
    loops = [calibrate(call, seconds) for call in calls]
    best = [float("inf")] * len(calls)
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for i, (call, n) in enumerate(zip(calls, loops, strict=True)):
                start = time.perf_counter()
                for _ in range(n):
                    call()
                best[i] = min(best[i], (time.perf_counter() - start) / n)
    finally:
        if enabled:
            gc.enable()
    return best


def measure(plan: TransformPlan, sizes: tuple[int, ...], seconds: float, repeats: int,
            check: bool) -> list[Cell]:
    impls = {"numpy twin": transform_py.transform}
    if selected.EXTENSION_LOADED:
        impls["cython"] = selected.transform
    rng = np.random.default_rng(SEED + 1)
    cells = []
    for rows in sizes:
        batch = frame(rows, rng)
        if check and selected.EXTENSION_LOADED:
            want, got = transform_py.transform(plan, batch, rows), selected.transform(
                plan, batch, rows)
            if not (np.array_equal(want[0], got[0], equal_nan=True)
                    and np.array_equal(want[1], got[1])):
                raise SystemExit(f"the kernel and the twin disagree at {rows} rows")
        keys: list[tuple[str, bool]] = []
        calls: list[Callable[[], object]] = []
        for sketch in (True, False):
            for name, fn in impls.items():
                window = plan.new_counts()  # one window, added into, as the server does
                out = np.empty((rows, plan.n_features), np.float32)
                keys.append((name, sketch))
                calls.append(partial(fn, plan, batch, rows, counts=window, sketch=sketch,
                                     out=out))
        for (name, sketch), took in zip(keys, best_times(calls, seconds, repeats), strict=True):
            cells.append(Cell(rows, name, sketch, took))
    return cells


def fixed_cost_new_arrays(plan: TransformPlan, seconds: float, repeats: int) -> float | None:
    """The 1-row call without ``counts=`` / ``out=`` (both allocated per call)."""
    if not selected.EXTENSION_LOADED:
        return None
    batch = frame(1, np.random.default_rng(SEED + 2))
    return best_times([lambda: selected.transform(plan, batch, 1)], seconds, repeats)[0]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def markdown(cells: list[Cell], plan: TransformPlan, fresh: float | None) -> str:
    twin = {(c.rows, c.sketch): c.seconds for c in cells if c.impl == "numpy twin"}
    lines = [
        f"Machine: {cpu_model()}; Python {sys.version.split()[0]}, NumPy {_version('numpy')}, "
        f"Cython {_version('Cython')}; one thread.",
        f"Spec: {plan.n_columns} raw columns (30 numeric, 4 categorical BYTES), "
        f"F = {plan.n_features} features, {plan.n_bins} sketch bins.",
        "",
        "| rows | implementation | sketch | µs/call | ns/row | rows/s | vs twin |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for c in cells:
        speedup = twin[(c.rows, c.sketch)] / c.seconds
        lines.append(
            f"| {c.rows} | {c.impl} | {'yes' if c.sketch else 'no'} | {c.seconds * 1e6:,.2f} "
            f"| {c.ns_per_row:,.0f} | {c.rows_per_second:,.0f} | {speedup:.1f}x |")
    cython = {(c.rows, c.sketch): c.seconds for c in cells if c.impl == "cython"}
    if cython:
        lines.append("")
        if (1, True) in cython:
            lines.append(f"Fixed cost per call (Cython, 1 row, sketch, counts= and out= given): "
                         f"{cython[(1, True)] * 1e6:.2f} µs"
                         + (f"; allocating both per call: {fresh * 1e6:.2f} µs." if fresh else "."))
        if (1024, True) in cython:
            lines.append(f"Cython with sketch at 1024 rows: "
                         f"{twin[(1024, True)] / cython[(1024, True)]:.1f}x the twin.")
    else:
        lines.append("\nThe Cython extension is not loaded: only the twin was timed.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transform", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=0.1, help="per timing loop")
    parser.add_argument("--repeats", type=int, default=15, help="timing loops per cell")
    parser.add_argument("--smoke", action="store_true", help="short timings, 1 and 64 rows")
    args = parser.parse_args(argv)
    sizes: tuple[int, ...] = SIZES
    if args.smoke:
        args.seconds, args.repeats, sizes = 0.02, 2, (1, 64)
    plan = build_plan()
    cells = measure(plan, sizes, args.seconds, args.repeats, check=True)
    fresh = fixed_cost_new_arrays(plan, args.seconds, args.repeats)
    print(markdown(cells, plan, fresh))
    return 0


if __name__ == "__main__":
    sys.exit(main())
