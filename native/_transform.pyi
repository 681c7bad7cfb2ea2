from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from .transform_plan import TransformPlan

NOGIL_MIN_ROWS: int

def transform(
    plan: TransformPlan,
    columns: Mapping[str, object],
    rows: int,
    *,
    counts: npt.NDArray[np.int64] | None = ...,
    sketch: bool = ...,
    out: npt.NDArray[np.float32] | None = ...,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
def count(
    plan: TransformPlan,
    columns: Mapping[str, object],
    rows: int,
    counts: npt.NDArray[np.int64] | None = ...,
) -> npt.NDArray[np.int64]: ...
def count_scores(
    edges: npt.NDArray[np.float64] | tuple[float, ...],
    scores: object,
    counts: npt.NDArray[np.int64] | None = ...,
) -> npt.NDArray[np.int64]: ...
