from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

OFFSET_DTYPE: np.dtype[np.int64]
NOGIL_MIN_BYTES: int

def pack(parts: Iterable[np.ndarray]) -> tuple[np.ndarray, npt.NDArray[np.int64]]: ...
def split(batch: np.ndarray, offsets: npt.ArrayLike) -> list[np.ndarray]: ...
def pack_bytes(
    buffers: Iterable[bytes | bytearray | memoryview], counts: Iterable[int]
) -> tuple[bytes, npt.NDArray[np.int64]]: ...
