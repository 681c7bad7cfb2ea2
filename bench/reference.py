"""Raw in-process ONNX Runtime: the model's own limit, and the expected answers.

One CPU session with one intra-op thread and no spinning (the server's defaults),
called back to back from the benchmark process, which is pinned to one core.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .stats import LatencySummary, summarize

# ONNX Runtime's tensor type names → NumPy dtypes, for the inputs we can generate.
_ORT_DTYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


@dataclass(frozen=True)
class InputSpec:
    """One model input of shape [batch, width]."""

    name: str
    dtype: type[np.generic]
    width: int


Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class ReferenceResult:
    """Back-to-back ``session.run`` at one batch size."""

    rows: int
    calls: int
    seconds: float
    latency: LatencySummary

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds

    @property
    def rows_per_s(self) -> float:
        return self.calls * self.rows / self.seconds


class OrtReference:
    """A single ONNX Runtime session on the benchmarked model."""

    def __init__(self, onnx_path: Path) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [self._spec(i) for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    @staticmethod
    def _spec(arg: ort.NodeArg) -> InputSpec:
        shape = list(arg.shape)
        dtype = _ORT_DTYPES.get(arg.type)
        if dtype is None or len(shape) != 2 or not isinstance(shape[1], int):
            raise ValueError(
                f"input {arg.name!r}: the benchmark generates only numeric [batch, width] "
                f"inputs, got {arg.type} {shape}"
            )
        return InputSpec(arg.name, dtype, shape[1])

    def make_batches(self, rows: int, count: int, seed: int) -> list[Batch]:
        """``count`` distinct random batches of ``rows`` rows (standard normal values)."""
        rng = np.random.default_rng(seed)
        return [
            {
                spec.name: (rng.standard_normal((rows, spec.width)) * 2).astype(spec.dtype)
                for spec in self.inputs
            }
            for _ in range(count)
        ]

    def run(self, batch: Batch) -> Batch:
        """Every output of the model for ``batch``, by name."""
        return dict(zip(self.outputs, self.session.run(self.outputs, batch), strict=True))

    def measure(self, batch: Batch, seconds: float, warmup_s: float) -> ReferenceResult:
        """Call the session back to back for ``seconds`` after ``warmup_s`` of warm-up."""
        rows = next(iter(batch.values())).shape[0]
        run = self.session.run
        outputs = self.outputs
        clock = time.perf_counter
        end = clock() + warmup_s
        while clock() < end:
            run(outputs, batch)
        latencies: list[float] = []
        start = clock()
        end = start + seconds
        now = start
        while now < end:
            run(outputs, batch)
            after = clock()
            latencies.append(after - now)
            now = after
        return ReferenceResult(rows, len(latencies), now - start, summarize(latencies))
