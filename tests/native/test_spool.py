"""The audit spool writer, kernel and twin: every appended record reaches a sealed
segment once, in order; strict records count as durable only after their group's
fsync, and the eventfd says when; a spool that cannot be written says why."""

from __future__ import annotations

import os
import select
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from native import _spool, spool_py

WRITERS: dict[str, Any] = {"kernel": _spool.SpoolWriter, "twin": spool_py.SpoolWriter}


def start(cls: Any, folder: Path, strict: bool, **kw: Any) -> tuple[Any, threading.Thread, int]:
    wake = os.eventfd(0, os.EFD_NONBLOCK)
    writer = cls(folder, strict, kw.get("group", 0.01), kw.get("seal", 0.05),
                 kw.get("segment_bytes", 1 << 20), wake)
    thread = threading.Thread(target=writer.run)
    thread.start()
    return writer, thread, wake


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "relaxed"])
@pytest.mark.parametrize("name", sorted(WRITERS))
def test_every_record_once_in_order(name: str, strict: bool, tmp_path: Path) -> None:
    writer, thread, wake = start(WRITERS[name], tmp_path, strict, segment_bytes=4096)
    numbers = []
    for i in range(5000):
        numbers.append(writer.append(b'{"n":%d}\n' % i))
        if i % 100 == 99:
            writer.kick()  # as the event loop does once per iteration
        if i % 500 == 499:  # let groups through, so segments rotate by size between them
            deadline = time.monotonic() + 5
            while writer.durable < numbers[-1] and time.monotonic() < deadline:
                time.sleep(0.001)
    assert numbers == list(range(1, 5001))
    writer.stop()
    thread.join(10)
    assert not thread.is_alive()
    segments = sorted(tmp_path.iterdir())
    assert segments and all(p.suffix == ".sealed" for p in segments)
    assert len(segments) > 1  # rotated by size (a segment closes after the group that
    # crossed segment_bytes)
    lines = b"".join(p.read_bytes() for p in segments).splitlines()
    assert lines == [b'{"n":%d}' % i for i in range(5000)]
    assert writer.durable == writer.appended == 5000
    assert writer.bytes_written == sum(p.stat().st_size for p in segments)
    assert writer.sealed == len(segments) and writer.failure is None
    assert os.eventfd_read(wake) >= 1
    os.close(wake)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_strict_wakes_the_loop_once_durable(name: str, tmp_path: Path) -> None:
    writer, thread, wake = start(WRITERS[name], tmp_path, True, seal=30.0)
    try:
        number = writer.append(b"one\n")
        writer.kick()
        ready, _, _ = select.select([wake], [], [], 5.0)
        assert ready, "no wake-up after the fsync"
        assert writer.durable >= number
        opened = (tmp_path / "00000001.open").read_bytes()  # on disk, not sealed:
        assert opened.rstrip(b"\0") == b"one\n"  # the line, then the zeros filled ahead
        assert len(opened) >= 256 * 1024  # zero-filled by the rotator, ahead of need
    finally:
        writer.stop()
        thread.join(10)
        os.close(wake)
    assert (tmp_path / "00000001.sealed").read_bytes() == b"one\n"


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_every_kick_wakes_the_writer_not_the_rotator(name: str, tmp_path: Path) -> None:
    """The writer and the rotator both wait for work; a kick (and a stop) must reach
    the writer every time, or a strict answer waits for the seal deadline (30 s here)."""
    writer, thread, wake = start(WRITERS[name], tmp_path, True, seal=30.0)
    try:
        for i in range(20):
            number = writer.append(b"%d\n" % i)
            writer.kick()
            ready, _, _ = select.select([wake], [], [], 5.0)
            assert ready, f"kick {i} was lost"
            os.eventfd_read(wake)
            assert writer.durable >= number
    finally:
        started = time.monotonic()
        writer.stop()
        thread.join(10)
        os.close(wake)
    assert not thread.is_alive() and time.monotonic() - started < 5, "stop was lost"


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_a_spool_that_cannot_be_written_says_why(name: str, tmp_path: Path) -> None:
    folder = tmp_path / "gone"
    folder.mkdir()
    wake = os.eventfd(0, os.EFD_NONBLOCK)
    writer = WRITERS[name](folder, True, 0.01, 0.05, 1 << 20, wake)
    shutil.rmtree(folder)  # the disk went away before a segment could be made
    thread = threading.Thread(target=writer.run)
    thread.start()
    try:
        writer.append(b"lost\n")
        writer.kick()
        ready, _, _ = select.select([wake], [], [], 5.0)
        assert ready
        assert writer.failure == os.strerror(2)  # No such file or directory
        assert writer.durable == 0  # nothing counts as on disk
    finally:
        writer.stop()
        thread.join(10)
        os.close(wake)
    assert not thread.is_alive()


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_a_failed_rotation_stops_what_follows_from_counting(name: str, tmp_path: Path) -> None:
    """The folder goes while a segment is open: the rotator cannot make the next one,
    and from then on no record counts as durable (strict answers are refused)."""
    folder = tmp_path / "spool"
    folder.mkdir()
    writer, thread, wake = start(WRITERS[name], folder, True, seal=0.05)
    try:
        first = writer.append(b"first\n")
        writer.kick()
        deadline = time.monotonic() + 5
        while writer.durable < first and time.monotonic() < deadline:
            time.sleep(0.001)
        assert writer.durable == first and writer.failure is None
        for path in folder.iterdir():  # the open segment and the one prepared after it
            path.unlink()
        folder.rmdir()
        deadline = time.monotonic() + 5
        while writer.failure is None and time.monotonic() < deadline:
            writer.append(b"more\n")  # seals come every 0.05 s; the next segment fails
            writer.kick()
            time.sleep(0.01)
        assert writer.failure == os.strerror(2)
        durable = writer.durable
        writer.append(b"after\n")
        writer.kick()
        time.sleep(0.1)
        assert writer.durable == durable < writer.appended
    finally:
        writer.stop()
        thread.join(10)
        os.close(wake)
    assert not thread.is_alive()


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_run_twice_at_once_is_refused(name: str, tmp_path: Path) -> None:
    writer, thread, wake = start(WRITERS[name], tmp_path, False)
    try:
        writer.append(b"x\n")
        writer.kick()
        ready, _, _ = select.select([wake], [], [], 5.0)  # the thread's loop is running
        assert ready
        with pytest.raises(RuntimeError, match="already running"):
            writer.run()
    finally:
        writer.stop()
        thread.join(10)
        os.close(wake)
