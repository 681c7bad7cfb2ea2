"""ONNX Runtime sessions for one model version.

A version runs as ``instance_count`` sessions (one per inference thread). The
execution provider is chosen once from the model's preference list and what this
ONNX Runtime build offers (CUDA when present, CPU otherwise) and logged. Sessions
default to one intra-op thread and no spinning so inference threads do not steal
the cores that serve gRPC. On CUDA, inputs and outputs go through IO binding.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelLoadError
from .model_config import ModelSettings
from .tensors import Datatype, from_onnx_type

log = logging.getLogger("osprey.runtime")

_ONNX_BFLOAT16 = 16  # onnx.TensorProto.BFLOAT16
_PROVIDER_NAMES = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def import_onnxruntime() -> Any:
    """``onnxruntime``, or a ModelLoadError saying which extra installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise ModelLoadError(
            "ONNX Runtime is not installed: pip install 'osprey[cpu]' (or 'osprey[gpu]' "
            "for CUDA)"
        ) from None
    return onnxruntime


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the graph declares it (-1 = dynamic dimension)."""

    name: str
    datatype: Datatype
    shape: tuple[int, ...]


def choose_provider(preference: Sequence[str], available: Sequence[str]) -> str:
    """The first preferred provider this build offers; CPU is always the fallback."""
    for choice in preference:
        provider = _PROVIDER_NAMES[choice]
        if provider in available:
            return provider
    return "CPUExecutionProvider"


def _specs(nodes: Sequence[Any], where: str) -> tuple[TensorSpec, ...]:
    specs = []
    for node in nodes:
        try:
            dt = from_onnx_type(node.type)
        except ValueError as exc:
            raise ModelLoadError(f"{where}: tensor '{node.name}': {exc}") from None
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (node.shape or []))
        specs.append(TensorSpec(node.name, dt, shape))
    return tuple(specs)


class OnnxModel:
    """The ONNX Runtime sessions of one model version, plus its signature."""

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        settings: ModelSettings,
        *,
        io_binding: bool | None = None,
    ) -> None:
        ort = import_onnxruntime()
        where = f"model '{name}' version {version}"
        if not path.is_file():
            raise ModelLoadError(f"{where}: artifact {path} does not exist")
        self.name = name
        self.version = version
        self.settings = settings
        self.provider = choose_provider(settings.execution_providers, ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3
        providers = [self.provider]
        if self.provider != "CPUExecutionProvider":
            providers.append("CPUExecutionProvider")
        try:
            self.sessions = [
                ort.InferenceSession(str(path), sess_options=options, providers=providers)
                for _ in range(settings.instance_count)
            ]
        except Exception as exc:  # ORT raises its own exception types
            raise ModelLoadError(f"{where}: ONNX Runtime cannot load {path}: {exc}") from None
        first = self.sessions[0]
        self.inputs = _specs(first.get_inputs(), where)
        self.outputs = _specs(first.get_outputs(), where)
        self.output_names = [o.name for o in self.outputs]
        self._bf16 = {s.name for s in (*self.inputs, *self.outputs) if s.datatype.name == "BF16"}
        on_cuda = self.provider == "CUDAExecutionProvider"
        self.io_binding = on_cuda if io_binding is None else io_binding
        self._check_batching(where)
        log.info(
            "%s: %d instance(s) on %s%s, inputs %s, outputs %s",
            where,
            settings.instance_count,
            self.provider,
            " with IO binding" if self.io_binding else "",
            [(i.name, i.datatype.name, list(i.shape)) for i in self.inputs],
            [(o.name, o.datatype.name, list(o.shape)) for o in self.outputs],
        )

    def _check_batching(self, where: str) -> None:
        s = self.settings
        names = set(self.output_names)
        if s.score_output and s.score_output not in names:
            raise ModelLoadError(
                f"{where}: score_output '{s.score_output}' is not an output; outputs are "
                f"{sorted(names)}"
            )
        if s.decision and s.decision.output and s.decision.output not in names:
            raise ModelLoadError(
                f"{where}: decision output '{s.decision.output}' is not an output; outputs "
                f"are {sorted(names)}"
            )
        if not s.batching:
            return
        for spec in (*self.inputs, *self.outputs):
            if not spec.shape or spec.shape[0] != -1:
                raise ModelLoadError(
                    f"{where}: max_batch_size is {s.max_batch_size} but tensor '{spec.name}' "
                    f"has shape {list(spec.shape)} without a dynamic first (batch) dimension; "
                    f"set max_batch_size to 0 to serve it unbatched"
                )

    def run(self, instance: int, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one execution on session ``instance``; returns every output in order."""
        session = self.sessions[instance]
        if self._bf16:
            return self._run_ort_values(session, feeds)
        if not self.io_binding:
            return list(session.run(self.output_names, feeds))
        binding = session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        for name in self.output_names:
            binding.bind_output(name, "cpu")
        session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())

    def _run_ort_values(self, session: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """bfloat16 has no NumPy type ONNX Runtime accepts: go through OrtValue."""
        ort = import_onnxruntime()
        values = {}
        for name, array in feeds.items():
            if name in self._bf16:
                raw = np.ascontiguousarray(array).view(np.uint16)
                values[name] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(raw, _ONNX_BFLOAT16)
            else:
                values[name] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))
        results = []
        for name, value in zip(
            self.output_names, session.run_with_ort_values(self.output_names, values), strict=True
        ):
            if name in self._bf16:
                data = ctypes.string_at(value.data_ptr(), value.tensor_size_in_bytes())
                dtype = next(o.datatype.dtype for o in self.outputs if o.name == name)
                results.append(np.frombuffer(data, dtype=dtype).reshape(value.shape()))
            else:
                results.append(value.numpy())
        return results

    def example_feeds(self, rows: int) -> dict[str, np.ndarray]:
        """Zero-filled inputs with ``rows`` rows (dynamic dimensions become 1)."""
        feeds = {}
        for spec in self.inputs:
            dims = [max(d, 1) for d in spec.shape]
            if self.settings.batching:
                dims[0] = rows
            if spec.datatype.name == "BYTES":
                feeds[spec.name] = np.full(dims, b"", dtype=object)
            else:
                feeds[spec.name] = np.zeros(dims, dtype=spec.datatype.dtype)
        return feeds

    def warmup(self, make_feeds: Callable[[int], dict[str, np.ndarray]] | None = None) -> None:
        """Run every warmup batch size on every instance before the version is ready.

        ``make_feeds(rows)`` builds the feeds (default: ``example_feeds``; a version with
        a feature spec passes its transform's, so the transform is warm too).
        """
        sizes = self.settings.warmup_batch_sizes if self.settings.batching else (1,)
        make_feeds = make_feeds or self.example_feeds
        for rows in sizes:
            rows = min(rows, self.settings.max_batch_size) if self.settings.batching else rows
            feeds = make_feeds(rows)
            for instance in range(len(self.sessions)):
                try:
                    self.run(instance, feeds)
                except Exception as exc:
                    raise ModelLoadError(
                        f"model '{self.name}' version {self.version}: warmup with {rows} "
                        f"row(s) failed: {exc}"
                    ) from None
