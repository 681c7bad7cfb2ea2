"""Decision ids: UUIDv7 text, time-ordered and unique within a process."""

from __future__ import annotations

import time
import uuid

from server.ids import uuid7, uuid7_str


def test_the_text_form_is_a_canonical_uuid_version_7() -> None:
    before = time.time_ns() // 1_000_000
    text = uuid7_str()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(text)
    assert str(parsed) == text  # canonical: lowercase, 8-4-4-4-12
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert before <= parsed.int >> 80 <= after + 1  # the unix-ms timestamp field


def test_ids_are_unique_and_sort_in_the_order_they_were_made() -> None:
    ids = [uuid7_str() if i % 2 else str(uuid7()) for i in range(20_000)]  # many per ms
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
