"""Model versions with a feature spec: raw columns in, the compiled transform before ORT.

A version folder may hold ``feature_spec.json`` and ``reference_profile.json``
(both, or neither) beside ``model.onnx``; native/README.md documents both. Such a
version is served differently from a plain ONNX model in three ways:

* Its public inputs are the spec's raw columns, in spec order, one tensor per
  column of shape [-1, 1]: numeric columns FP32, categorical columns BYTES. The
  ONNX model's own input (one FP32 matrix [N, F], F = the spec's feature count,
  checked at load) is internal.
* In the version's inference thread, before ONNX Runtime, the batch's columns are
  packed (``native.pack``: numeric arrays with ``pack``, BYTES buffers with
  ``pack_bytes``, so categorical values reach the kernel as raw KServe buffers,
  never as Python objects per element) and turned into the matrix by the compiled
  transform (``native.transform``: Cython, or its NumPy twin), which in the same
  pass counts every raw value into the reference profile's bins.
* Those counts accumulate per version (``DriftSketch``). Each inference instance
  (thread) counts a batch into its own scratch array and adds it into its own
  window only once the batch has run and been split, so a batch that fails (and is
  run again request by request) is never counted twice and instances share no
  mutable counts. ``DriftSketch.snapshot`` adds the instances' windows up.

A request over ``max_batch_size`` rows is split on the event loop (``chunk``):
numeric columns are sliced, BYTES buffers sliced at element boundaries found with
the native codec (the one place that makes an object per element, transiently).

A column the transform refuses (``native.feature_errors.ColumnError``) becomes
``InvalidColumn`` (INVALID_ARGUMENT naming the column). When it happens in a batch
of several requests, the batcher runs each request alone, so only the culprit fails,
with element numbers of its own request.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from native import bytes_codec, pack
from native.feature_errors import ColumnError, DocumentError, ValueTooLong
from native.feature_spec import FeatureSpec
from native.reference_profile import ReferenceProfile
from native.transform_plan import TransformPlan, compile_plan

from .errors import InvalidColumn, ModelLoadError
from .model_source import PROFILE_FILE, SPEC_FILE, FeatureFiles
from .runtime import OnnxModel, TensorSpec
from .tensors import DATATYPES

try:  # the selector (Cython kernel, or the twin under OSPREY_NO_EXTENSIONS=1)
    from native.transform import EXTENSION_LOADED as TRANSFORM_EXTENSION
    from native.transform import transform
except ImportError:  # pragma: no cover - a build without the selector
    from native.transform_py import transform

    TRANSFORM_EXTENSION = False

I64 = npt.NDArray[np.int64]
# One request's (or one packed batch's) columns: numeric float32 [n, 1] arrays,
# categorical raw KServe BYTES buffers.
Columns = dict[str, Any]


@dataclass(frozen=True)
class DriftCounts:
    """A version's drift counts so far: what the side-car will ship per window.

    ``counts`` is one flat int64 array in the layout of ``profile.flat_counts()``
    (``profile.bin_offsets`` locates each raw column's bins); ``rows`` is the number
    of rows counted. Counts of two snapshots subtract into a window exactly.
    """

    model: str
    version: int
    rows: int
    counts: I64
    profile: ReferenceProfile

    def per_feature(self) -> dict[str, I64]:
        """Each raw column's bins, by name (views of ``counts``)."""
        offsets = self.profile.bin_offsets
        return {
            name: self.counts[offsets[i] : offsets[i + 1]]
            for i, name in enumerate(self.profile.names)
        }


class DriftSketch:
    """Per-instance drift windows of one version (each instance is one thread).

    ``batch_counts(i)`` hands instance ``i`` its zeroed scratch array for the
    transform to count into; ``commit(i, rows)`` adds the scratch into instance
    ``i``'s window once the batch has succeeded. Only instance ``i``'s thread touches
    its scratch; its window is guarded by its own lock, held for one addition of
    ``n_bins`` integers, so ``snapshot`` (any thread) sees whole batches only.
    """

    def __init__(self, plan: TransformPlan, instances: int) -> None:
        self.n_bins = int(plan.n_bins)
        self._scratch = [plan.new_counts() for _ in range(instances)]
        self._windows = [plan.new_counts() for _ in range(instances)]
        self._rows = [0] * instances
        self._locks = [threading.Lock() for _ in range(instances)]

    def batch_counts(self, instance: int) -> I64:
        """Instance ``instance``'s scratch counts, zeroed (its thread only)."""
        scratch = self._scratch[instance]
        scratch.fill(0)
        return scratch

    def commit(self, instance: int, rows: int) -> None:
        """Add the scratch of ``instance`` (a batch of ``rows`` rows) into its window."""
        with self._locks[instance]:
            self._windows[instance] += self._scratch[instance]
            self._rows[instance] += rows

    def snapshot(self) -> tuple[int, I64]:
        """(rows, counts) added up over the instances."""
        total = np.zeros(self.n_bins, dtype=np.int64)
        rows = 0
        for i, lock in enumerate(self._locks):
            with lock:
                total += self._windows[i]
                rows += self._rows[i]
        return rows, total


def _read(path: Path, where: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{where}: cannot read {path}: {exc.strerror}") from None


class FeatureTransform:
    """The compiled feature spec of one version, its public inputs and drift counts."""

    def __init__(
        self,
        where: str,
        spec: FeatureSpec,
        profile: ReferenceProfile,
        model: OnnxModel,
        sketch: bool = True,
    ) -> None:
        try:
            self.plan = compile_plan(spec, profile)
        except DocumentError as exc:
            raise ModelLoadError(f"{where}: {exc}") from None
        self.spec = spec
        self.profile = profile
        self.model_input = self._check_model_input(where, model, self.plan.n_features)
        batch_dim = next(s for s in model.inputs if s.name == self.model_input).shape[0]
        self.inputs = tuple(
            TensorSpec(
                name,
                DATATYPES["BYTES"] if categorical else DATATYPES["FP32"],
                (batch_dim, 1),
            )
            for name, categorical in zip(self.plan.column_names, self.plan.categorical, strict=True)
        )
        self.categorical = dict(zip(self.plan.column_names, self.plan.categorical, strict=True))
        self.max_bytes = {
            name: int(self.plan.max_bytes[c]) for c, name in enumerate(self.plan.column_names)
        }
        # None: the model's config.json says "drift_sketch": false (no counting at all).
        self.drift = DriftSketch(self.plan, len(model.sessions)) if sketch else None

    @property
    def sketching(self) -> bool:
        """Whether served rows are counted into the drift sketch."""
        return self.drift is not None

    @classmethod
    def load(
        cls, name: str, version: int, files: FeatureFiles, model: OnnxModel, sketch: bool = True
    ) -> FeatureTransform:
        """Read, validate and compile a version's spec and profile (ModelLoadError)."""
        where = f"model '{name}' version {version}"
        if files.spec is None or files.profile is None:
            present = files.spec or files.profile
            assert present is not None
            missing = present.parent / (SPEC_FILE if files.spec is None else PROFILE_FILE)
            raise ModelLoadError(
                f"{where}: {present} is present but {missing} is missing; a version with a "
                f"feature spec needs both {SPEC_FILE} and {PROFILE_FILE}"
            )
        spec_text = _read(files.spec, where)
        profile_text = _read(files.profile, where)
        try:
            spec = FeatureSpec.from_json(spec_text)
        except DocumentError as exc:
            raise ModelLoadError(f"{where}: {files.spec}: {exc}") from None
        try:
            profile = ReferenceProfile.from_json(profile_text)
        except DocumentError as exc:
            raise ModelLoadError(f"{where}: {files.profile}: {exc}") from None
        return cls(where, spec, profile, model, sketch)

    @staticmethod
    def _check_model_input(where: str, model: OnnxModel, width: int) -> str:
        """The name of the ONNX input the matrix feeds: one FP32 [N, F] input."""
        if len(model.inputs) != 1:
            raise ModelLoadError(
                f"{where}: a model with a feature spec takes one FP32 matrix input [N, {width}]; "
                f"this ONNX model has {len(model.inputs)} inputs "
                f"({', '.join(repr(i.name) for i in model.inputs)})"
            )
        (spec,) = model.inputs
        if spec.datatype.name != "FP32" or len(spec.shape) != 2:
            raise ModelLoadError(
                f"{where}: a model with a feature spec takes one FP32 matrix input [N, {width}]; "
                f"ONNX input '{spec.name}' is {spec.datatype.name} {list(spec.shape)}"
            )
        if spec.shape[1] not in (-1, width):
            raise ModelLoadError(
                f"{where}: the feature spec produces {width} features per row but ONNX input "
                f"'{spec.name}' has width {spec.shape[1]}; they must be equal"
            )
        return spec.name

    # -- event loop ---------------------------------------------------------------

    def chunk(self, columns: Columns, rows: int, cap: int) -> list[tuple[Columns, int]]:
        """Split one request of ``rows`` > ``cap`` rows into chunks of at most ``cap``.

        Numeric columns are sliced (views); a BYTES buffer is walked once (the native
        codec; malformed or over-long elements are refused here, naming the column)
        to find where each chunk's elements start, then sliced (memoryviews).
        """
        bounds = [(s, min(s + cap, rows)) for s in range(0, rows, cap)]
        pieces: dict[str, list[Any]] = {}
        for name, value in columns.items():
            if self.categorical[name]:
                ends = self._element_ends(name, value, rows)
                view = memoryview(value)
                pieces[name] = [view[ends[lo] : ends[hi]] for lo, hi in bounds]
            else:
                pieces[name] = [value[lo:hi] for lo, hi in bounds]
        return [
            ({name: parts[k] for name, parts in pieces.items()}, hi - lo)
            for k, (lo, hi) in enumerate(bounds)
        ]

    def _element_ends(self, name: str, buffer: bytes, rows: int) -> I64:
        """Byte offsets [rows + 1] where each element of a BYTES column starts (and ends)."""
        try:
            items = bytes_codec.decode(buffer, rows)
        except ValueError as exc:
            raise InvalidColumn(name, f"column '{name}': {exc}") from None
        lengths = np.fromiter(map(len, items), dtype=np.int64, count=rows)
        longer = np.flatnonzero(lengths > self.max_bytes[name])
        if longer.size:
            i = int(longer[0])
            too_long = ValueTooLong(name, i, int(lengths[i]), self.max_bytes[name])
            raise InvalidColumn(name, str(too_long))
        ends = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(lengths + 4, out=ends[1:])
        return ends

    # -- inference thread ----------------------------------------------------------

    def prepare(
        self, instance: int, parts: Sequence[tuple[Mapping[str, Any], int]]
    ) -> tuple[dict[str, np.ndarray], npt.NDArray[np.int64] | None, int]:
        """Pack the requests' columns and transform them, counting into the scratch.

        Returns the ONNX feeds, the row offsets of the requests (None for one) and the
        batch's rows. ``commit`` adds the counts once the batch has succeeded.
        """
        offsets = None
        if len(parts) == 1:
            columns, rows = dict(parts[0][0]), parts[0][1]
        else:
            counts = [n for _, n in parts]
            rows = sum(counts)
            columns = {}
            for name, categorical in self.categorical.items():
                values = [p[name] for p, _ in parts]
                if categorical:
                    try:
                        columns[name], offsets = pack.pack_bytes(values, counts)
                    except ValueError as exc:
                        raise InvalidColumn(name, f"column '{name}': {exc}") from None
                else:
                    columns[name], offsets = pack.pack(values)
        try:
            if self.drift is None:
                matrix, _ = transform(self.plan, columns, rows, sketch=False)
            else:
                scratch = self.drift.batch_counts(instance)
                matrix, _ = transform(self.plan, columns, rows, counts=scratch)
        except ColumnError as exc:
            raise InvalidColumn(exc.column, str(exc)) from None
        return {self.model_input: matrix}, offsets, rows

    def commit(self, instance: int, rows: int) -> None:
        """The batch ``prepare`` counted has succeeded: add its counts to the window."""
        if self.drift is not None:
            self.drift.commit(instance, rows)

    def example_feeds(self, rows: int) -> dict[str, np.ndarray]:
        """Warmup feeds: ``rows`` rows of zeros and empty strings, through the transform
        (not counted)."""
        if self.inputs[0].shape[0] >= 0:  # unbatched, fixed rows
            rows = self.inputs[0].shape[0]
        columns: Columns = {
            name: b"\0\0\0\0" * rows if categorical else np.zeros((rows, 1), dtype=np.float32)
            for name, categorical in self.categorical.items()
        }
        matrix, _ = transform(self.plan, columns, rows, sketch=False)
        return {self.model_input: matrix}

    def drift_counts(self, model: str, version: int) -> DriftCounts | None:
        """The counts so far (None when the version does not sketch)."""
        if self.drift is None:
            return None
        rows, counts = self.drift.snapshot()
        return DriftCounts(model, version, rows, counts, self.profile)
