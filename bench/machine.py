"""The machine a run happened on, and where the server and the client were placed."""

from __future__ import annotations

import os
import platform
import shutil
import sys
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


def system_cpu_seconds() -> float:
    """Busy CPU time of the whole machine (every core, every process), from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
