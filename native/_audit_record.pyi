from collections.abc import Callable
from typing import Any

def encode(entry: Any, stream_id: str, seq: int,
           column_json: Callable[[Any, bool], bytes]) -> bytes: ...
