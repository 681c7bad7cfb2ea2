"""The machine a run happened on, and where the server and the client were placed."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


def cpu_model() -> str:
    """The first CPU's model name, family/model/stepping and clock from /proc/cpuinfo.

    Virtual machines often report a bare "AMD EPYC": the family and model numbers
    still tell the generation.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    first = text.split("\n\n", 1)[0]
    info = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in first.splitlines())
    )
    name = info.get("model name", platform.processor() or "unknown")
    details = [
        f"family {info['cpu family']} model {info['model']} stepping {info.get('stepping', '?')}"
        if "cpu family" in info and "model" in info
        else "",
        f"{float(info['cpu MHz']):.0f} MHz" if "cpu MHz" in info else "",
        "virtualised" if " hypervisor" in f" {info.get('flags', '')} " else "",
    ]
    details = [d for d in details if d]
    return f"{name} ({', '.join(details)})" if details else name


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, str | int]:
    """CPU, core counts, OS and the versions of what is on the request path."""
    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count() or 0,
        "usable_cpus": len(os.sched_getaffinity(0)),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "onnxruntime": _version("onnxruntime"),
        "grpcio": _version("grpcio"),
        "tritonclient": _version("tritonclient"),
        "numpy": _version("numpy"),
    }


@dataclass(frozen=True)
class Placement:
    """Which cores the server and the load generator run on."""

    server_cpu: int | None
    client_cpu: int | None

    @property
    def pinned(self) -> bool:
        return self.server_cpu is not None

    def server_prefix(self) -> list[str]:
        """The command prefix that pins the server process."""
        return ["taskset", "-c", str(self.server_cpu)] if self.pinned else []

    def describe(self) -> str:
        if not self.pinned:
            return "unpinned: server and load generator share every core"
        return (
            f"server pinned to CPU {self.server_cpu} (taskset), "
            f"load generator and in-process ORT pinned to CPU {self.client_cpu}"
        )


def choose_placement(pin: bool) -> Placement:
    """Server on the first usable core, client on the second, when both exist."""
    cores = sorted(os.sched_getaffinity(0))
    if not pin or len(cores) < 2 or shutil.which("taskset") is None:
        return Placement(None, None)
    return Placement(cores[0], cores[1])


def pin_this_process(placement: Placement) -> None:
    """Pin the calling process (and threads it starts later) to the client core."""
    if placement.client_cpu is not None:
        os.sched_setaffinity(0, {placement.client_cpu})


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """The live descendants of process ``pid`` (children, theirs, ...), from /proc."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def command_line(pid: int) -> str:
    """Process ``pid``'s command line, arguments joined by spaces ('' once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""


def tree_cpu_seconds(pid: int, leave_out: Callable[[str], bool] = lambda _: False) -> float:
    """User + system CPU time of process ``pid`` and its live descendants, except those
    whose command line ``leave_out`` picks (a worker pool counts; a side-car may not)."""
    total = process_cpu_seconds(pid)
    for child in descendants(pid):
        if leave_out(command_line(child)):
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):  # it exited meanwhile
            total += process_cpu_seconds(child)
    return total


def cpu_busy_seconds(cpu: int) -> float:
    """Busy CPU time of core ``cpu`` so far (every process on it), from /proc/stat."""
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith(f"cpu{cpu} "):
                fields = [int(f) for f in line.split()[1:9]]
                busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
                return busy / os.sysconf("SC_CLK_TCK")
    raise ValueError(f"no cpu{cpu} in /proc/stat")


def wait_until_quiet(cpu: int, busy_below: float = 0.05, window: float = 0.5,
                     timeout: float = 180.0) -> float:
    """Wait until core ``cpu`` was busy less than ``busy_below`` of a ``window`` (what a
    server left running, such as an audit side-car's backlog, is done); returns the
    seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        before = cpu_busy_seconds(cpu)
        time.sleep(window)
        if (cpu_busy_seconds(cpu) - before) / window < busy_below:
            break
    return time.monotonic() - start


def system_cpu_seconds() -> float:
    """Busy CPU time of the whole machine (every core, every process), from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
