"""What the audit log costs: the same server with audit off, relaxed and strict.

    python -m bench.audit            # 3 interleaved rounds (about 2 minutes)
    python -m bench.audit --smoke    # CI: one short round, every answer checked

Three servers (``--audit off|relaxed|strict``, each with its own home, spool and
embedded SQLite) serve the plain MLP of ``bench/models.py`` with a declared score
and decision, pinned to the same core, the load generator on the other. When the
PostgreSQL of ``--postgres`` is reachable (not under ``--smoke``), a fourth,
``relaxed-pg``, audits relaxed into a fresh database there, so that the spool is seen
to keep up at saturation on both databases. The audit
shipper side-car of each auditing server stays on the server's core
(``--sidecar server``, the default: all of Osprey on one core) or moves to the load
generator's (``--sidecar client``, as a side-car container with its own CPU would). Each round
drives every server in turn with

* 1-row unary requests at concurrency 64 (saturation): requests/s, and the spool
  size before and after the window (shipping keeps up when it does not grow);
* 1-row unary requests at concurrency 8: p50 and p99 latency.

Before each cell the harness waits for the server core to go quiet, so that what one
cell left running (a side-car still starting, or shipping the end of the previous
window) does not land on the next cell's server.

The spool disk's fsync latency (p50/p99 of 2,000 fsyncs of 1 KiB appends, in the
same folder) is measured first. Last, the shipper alone: N records written by the
real writer, then loaded by the real shipper into a fresh SQLite database and a
fresh PostgreSQL database (when reachable), as decisions per second.

Targets (issue 6): relaxed keeps >= 90 % of audit-off throughput at 1-row
saturation; strict adds at most max(1 ms, 1.5 x fsync p99) to the p99 at
concurrency 8.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as aioclient

from .loadgen import LoadResult, Scenario, reference_payload
from .loadgen import run_scenario as drive
from .machine import (
    choose_placement,
    command_line,
    descendants,
    machine_info,
    pin_this_process,
    process_cpu_seconds,
    system_cpu_seconds,
    wait_until_quiet,
)
from .models import write_decided_mlp
from .reference import OrtReference
from .server_process import BenchServer, ServerFailed, is_audit_sidecar

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MODES = ("off", "relaxed", "strict")
SATURATION = Scenario("unary", 1, 64)
LATENCY = Scenario("unary", 1, 8)
METRICS = re.compile(r"metrics=\S+:(\d+)")
SHIP_RECORDS = 20_000


def place_sidecars(servers: dict[str, BenchServer], cpu: int | None) -> list[int]:
    """Move each server's audit shipper side-car (its child processes) to ``cpu``."""
    moved = []
    deadline = time.monotonic() + 30
    for mode, server in servers.items():
        if mode == "off":
            continue
        children: list[int] = []
        while not children and time.monotonic() < deadline:
            children = descendants(server.proc.pid)
            time.sleep(0.1)
        for pid in children:
            if cpu is not None:
                for task in Path(f"/proc/{pid}/task").iterdir():
                    os.sched_setaffinity(int(task.name), {cpu})
            moved.append(pid)
    return moved


def group_flush_cost(folder: Path, count: int = 2000, size: int = 8800) -> dict[str, Any]:
    """CPU and wall µs per strict group of ``size`` bytes: fsync after an append (the
    file grows: a journal commit) against the spool's way, pwrite into a segment
    zero-filled ahead and fdatasync (no size change)."""
    data = b"x" * size
    out: dict[str, Any] = {}
    for way in ("append+fsync", "zero-filled+fdatasync"):
        path = folder / "flush-probe"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if way == "append+fsync"
                                                         else 0), 0o644)
        if way != "append+fsync":
            os.write(fd, bytes(count * size))
            os.fsync(fd)
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(count):
            if way == "append+fsync":
                os.write(fd, data)
                os.fsync(fd)
            else:
                os.pwrite(fd, data, i * size)
                os.fdatasync(fd)
        out[way] = {"cpu_us": (time.process_time() - cpu) / count * 1e6,
                    "wall_us": (time.perf_counter() - wall) / count * 1e6}
        os.close(fd)
        path.unlink()
    return out


def fsync_latency(folder: Path, count: int = 2000) -> tuple[float, float]:
    """(p50, p99) ms of fsync after a 1 KiB append, in ``folder``."""
    path = folder / "fsync-probe"
    times = []
    with path.open("ab") as f:
        for _ in range(count):
            f.write(b"x" * 1024)
            f.flush()
            start = time.perf_counter()
            os.fsync(f.fileno())
            times.append(time.perf_counter() - start)
    path.unlink()
    times.sort()
    return times[len(times) // 2] * 1e3, times[int(len(times) * 0.99)] * 1e3


def paced_fdatasync_latency(folder: Path, count: int = 2000, gap: float = 0.0005
                            ) -> dict[str, float]:
    """p50, p99 and p99.9 ms of the spool's own strict group write (1 KiB written into
    a zero-filled file, then fdatasync), one every ``gap`` seconds as groups come under
    load: a paced disk shows a longer tail than the back-to-back probe above."""
    path = folder / "paced-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, bytes(count * 1024))
        os.fsync(fd)
        times = []
        for i in range(count):
            os.pwrite(fd, b"x" * 1024, i * 1024)
            start = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - start)
            time.sleep(gap)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    return {q: times[min(len(times) - 1, int(len(times) * f))] * 1e3
            for q, f in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))}


PG_MODE = "relaxed-pg"  # relaxed, its side-car shipping into PostgreSQL


@dataclass
class BenchDatabase:
    """A PostgreSQL database of this run (created and migrated; dropped at the end)."""

    admin_url: str
    name: str

    @property
    def url(self) -> str:
        return self.admin_url.rsplit("/", 1)[0] + "/" + self.name

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def create_database(admin_url: str, suffix: str) -> BenchDatabase | None:
    """A fresh database on the PostgreSQL of ``admin_url``; None if it is unreachable."""
    import psycopg

    if not admin_url:
        return None
    name = f"osprey_bench_audit_{suffix}_{os.getpid()}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as c:
            c.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL not reachable ({exc}); nothing measured on it")
        return None
    return BenchDatabase(admin_url, name)


def server_database(admin_url: str) -> BenchDatabase | None:
    """The database a relaxed server audits into (``PG_MODE``), at the code's schema:
    an explicit database is never migrated by the server itself."""
    from registry import migrate
    from registry.db import Database

    created = create_database(admin_url, "serving")
    if created is not None:
        db = Database(created.url)
        migrate.upgrade(db)
        db.dispose()
    return created


def spool_bytes(server: BenchServer) -> float:
    port = METRICS.search(server.stdout_path.read_text())
    if port is None:
        return float("nan")
    with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/metrics", timeout=5) as r:
        found = re.search(r"^osprey_audit_spool_bytes (\S+)$", r.read().decode(), re.M)
    return float(found.group(1)) if found else 0.0


@dataclass
class Cell:
    round: int
    mode: str
    scenario: Scenario
    result: LoadResult
    spool_before: float
    spool_after: float


async def run_rounds(servers: dict[str, BenchServer], payload: Any, args: argparse.Namespace
                     ) -> list[Cell]:
    cells = []
    clients = {m: aioclient.InferenceServerClient(s.url) for m, s in servers.items()}
    try:
        for r in range(args.rounds):
            modes = tuple(servers)
            order = modes if r % 2 == 0 else tuple(reversed(modes))
            for scenario in (SATURATION, LATENCY):
                for mode in order:
                    server = servers[mode]
                    clocks: dict[str, Callable[[], float]] = {
                        "server": server.cpu_seconds, "client": time.process_time,
                        "machine": system_cpu_seconds,
                        "sidecar": functools.partial(sidecar_cpu_seconds, server)}
                    if args.quiet_cpu is not None:  # a side-car's backlog, or its start
                        await asyncio.to_thread(wait_until_quiet, args.quiet_cpu)
                    before = spool_bytes(server) if mode != "off" else 0.0
                    result = await drive(clients[mode], "mlp", payload, scenario, args.seconds,
                                         args.warmup, args.check_every, "per-worker", clocks)
                    after = spool_bytes(server) if mode != "off" else 0.0
                    cells.append(Cell(r + 1, mode, scenario, result, before, after))
                    print(f"  round {r + 1} {mode:10} c={scenario.concurrency:<2} "
                          f"{result.requests_per_s:8,.0f} req/s  p50 {result.latency.p50_ms:.3f}"
                          f" ms  p99 {result.latency.p99_ms:.3f} ms  CPU/req server "
                          f"{cpu_us(result, 'server'):.0f} side-car {cpu_us(result, 'sidecar'):.0f}"
                          f" µs  errors {result.errors}  "
                          f"spool {before:,.0f} -> {after:,.0f} B", flush=True)
                    if not server.alive():
                        raise ServerFailed(f"{mode} server died:\n{server.stderr_tail()}")
    finally:
        for c in clients.values():
            await c.close()
    return cells


def sidecar_cpu_seconds(server: BenchServer) -> float:
    """CPU time of the server's audit shipper side-car(s) so far (0 without one)."""
    total = 0.0
    for pid in descendants(server.proc.pid):
        if is_audit_sidecar(command_line(pid)):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += process_cpu_seconds(pid)
    return total


def cpu_us(result: LoadResult, clock: str) -> float:
    """CPU µs per request of ``clock`` (the server process, its side-car) in a window."""
    return result.cpu_busy.get(clock, 0.0) * 1e6 / max(result.requests_per_s, 1e-9)


def shipping_rate(url: str, workdir: Path, records: int) -> float:
    """Decisions per second the real shipper loads into ``url`` (a fresh database)."""
    from registry import migrate
    from registry.audit_chain import load_key
    from registry.db import Database
    from server.audit_shipper import SpoolShipper
    from server.audit_spool import AuditEntry, AuditLog
    from server.ids import uuid7

    db = Database(url)
    migrate.upgrade(db)
    key = load_key(workdir / "ship.key", create=True)
    x = np.zeros((1, 30), np.float32)
    y = np.full((1, 1), 0.25, np.float32)

    async def write() -> AuditLog:
        log = AuditLog(workdir / "ship-spool", key, "relaxed", seal_seconds=0.2)
        log.start()
        for i in range(records):
            await log.record(AuditEntry(
                decision_id=str(uuid7()), at_ns=time.time_ns(), request_id=str(i),
                routing_key="", model="mlp", version=1, route="stable", rows=1, status="OK",
                error="", latency_us=300, caller="ipv4:127.0.0.1:1", principal="", trace_id="",
                inputs={"INPUT": x}, outputs={"PROBABILITY": y},
                score_output="PROBABILITY", threshold=0.5))
        await asyncio.to_thread(log.stop)
        return log

    log = asyncio.run(write())
    shipper = SpoolShipper(log.spool_root, db)
    start = time.perf_counter()
    assert shipper.ship_once(), "shipping failed"
    seconds = time.perf_counter() - start
    db.dispose()
    return records / seconds


def summarise(cells: list[Cell], fsync_p99: float) -> tuple[str, dict[str, Any]]:
    def per(mode: str, scenario: Scenario, pick: Any) -> list[float]:
        return [pick(c.result) for c in cells if c.mode == mode and c.scenario == scenario]

    lines = ["| audit | 1 row c=64 req/s | vs off | CPU µs/req server + side-car | "
             "spool growth in window (B) | 1 row c=8 p50 ms | p99 ms | p99 added vs off (ms) |",
             "|---|--:|--:|--:|--:|--:|--:|--:|"]
    off_rate = statistics.median(per("off", SATURATION, lambda r: r.requests_per_s))
    off_p99 = statistics.median(per("off", LATENCY, lambda r: r.latency.p99_ms))
    summary: dict[str, Any] = {}
    for mode in dict.fromkeys(c.mode for c in cells):
        rate = statistics.median(per(mode, SATURATION, lambda r: r.requests_per_s))
        p50 = statistics.median(per(mode, LATENCY, lambda r: r.latency.p50_ms))
        p99 = statistics.median(per(mode, LATENCY, lambda r: r.latency.p99_ms))
        server_us = statistics.median(per(mode, SATURATION, lambda r: cpu_us(r, "server")))
        sidecar_us = statistics.median(per(mode, SATURATION, lambda r: cpu_us(r, "sidecar")))
        growth = max((c.spool_after - c.spool_before for c in cells
                      if c.mode == mode and c.scenario == SATURATION), default=0.0)
        lines.append(f"| {mode} | {rate:,.0f} | {rate / off_rate:.1%} | {server_us:.0f} + "
                     f"{sidecar_us:.0f} | {growth:,.0f} | "
                     f"{p50:.3f} | {p99:.3f} | {p99 - off_p99:+.3f} |")
        summary[mode] = {"requests_per_s": rate, "ratio": rate / off_rate, "p50_ms": p50,
                         "p99_ms": p99, "p99_added_ms": p99 - off_p99,
                         "max_spool_growth_bytes": growth, "server_cpu_us": server_us,
                         "sidecar_cpu_us": sidecar_us}
    relaxed_ok = summary["relaxed"]["ratio"] >= 0.90
    budget = max(1.0, 1.5 * fsync_p99)
    strict_ok = summary["strict"]["p99_added_ms"] <= budget
    lines.append("")
    lines.append(f"relaxed >= 90 % of off at saturation: "
                 f"{'met' if relaxed_ok else 'NOT met'} ({summary['relaxed']['ratio']:.1%}); "
                 f"strict p99 added <= max(1 ms, 1.5 x fsync p99 = {1.5 * fsync_p99:.3f} ms): "
                 f"{'met' if strict_ok else 'NOT met'} "
                 f"({summary['strict']['p99_added_ms']:+.3f} ms)")
    summary["targets"] = {"relaxed_90": relaxed_ok, "strict_p99": strict_ok, "budget_ms": budget}
    return "\n".join(lines), summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--rounds", type=int, default=3)
    add("--seconds", type=float, default=3.0)
    add("--warmup", type=float, default=1.0)
    add("--check-every", type=int, default=50)
    add("--records", type=int, default=SHIP_RECORDS, help="records for the shipping rate")
    add("--postgres", default=os.environ.get(
        "OSPREY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="admin URL of a PostgreSQL to measure shipping into ('' to skip)")
    add("--sidecar", choices=["server", "client"], default="server",
        help="the core of the audit shipper side-cars: the server's (inherited: all of "
             "Osprey on one core) or the load generator's")
    add("--smoke", action="store_true")
    add("--output", type=Path)
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.seconds, args.warmup, args.check_every, args.records = (
            1, 0.4, 0.2, 1, 500)
    machine = machine_info()
    placement = choose_placement(pin=True)
    pin_this_process(placement)
    args.quiet_cpu = None if args.smoke else placement.server_cpu
    print(f"machine: {machine['cpu_model']}; placement: {placement.describe()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="osprey-audit-bench-") as tmp:
        root = Path(tmp)
        p50, p99 = fsync_latency(root)
        paced = paced_fdatasync_latency(root, 200 if args.smoke else 2000)
        flush = group_flush_cost(root, 200 if args.smoke else 2000)
        print("strict group of 8 records (8.8 KB): " + "; ".join(
            f"{way} {c['cpu_us']:.0f} µs CPU, {c['wall_us']:.0f} µs wall"
            for way, c in flush.items()), flush=True)
        print(f"spool disk fsync after a 1 KiB append: p50 {p50:.3f} ms, p99 {p99:.3f} ms "
              f"(back to back; the target's budget); a strict group's fdatasync paced "
              f"every 0.5 ms: p50 {paced['p50']:.3f}, p99 {paced['p99']:.3f}, p99.9 "
              f"{paced['p99.9']:.3f} ms", flush=True)
        repo = root / "models"
        payload = reference_payload(OrtReference(write_decided_mlp(repo)), rows=1)
        servers = {}
        serving_db = None if args.smoke else server_database(args.postgres)
        try:
            modes = {mode: ["--audit", mode] for mode in MODES}
            if serving_db is not None:
                modes[PG_MODE] = ["--audit", "relaxed", "--database-url", serving_db.url]
            for mode, mode_args in modes.items():
                work = root / mode
                work.mkdir()
                servers[mode] = BenchServer(repo, work, placement.server_prefix(), "WARNING",
                                            mode_args)
            for server in servers.values():
                server.wait_ready()
            sidecars = place_sidecars(
                servers, placement.client_cpu if args.sidecar == "client" else None)
            print(f"audit shipper side-cars {sidecars} on the "
                  f"{args.sidecar}'s core", flush=True)
            cells = asyncio.run(run_rounds(servers, payload, args))
        finally:
            codes = {m: s.stop() for m, s in servers.items()}
            if serving_db is not None:
                serving_db.drop()
        table, summary = summarise(cells, p99)
        rates = {"sqlite": shipping_rate(f"sqlite:///{root / 'ship.db'}", root, args.records)}
        shipping_db = create_database(args.postgres, "shipping")
        if shipping_db is not None:
            try:
                rates["postgresql"] = shipping_rate(shipping_db.url, root / "pg", args.records)
            finally:
                shipping_db.drop()
    print()
    print(f"audit shipper side-cars on the {args.sidecar}'s core")
    print(table)
    print("shipping, decisions/s (1-row records, one transaction per segment): " +
          ", ".join(f"{db} {rate:,.0f}" for db, rate in rates.items()))
    output = args.output or RESULTS_DIR / time.strftime("audit-%Y%m%d-%H%M%S.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({
        "bench": "audit", "machine": machine, "placement": placement.describe(),
        "sidecar_core": args.sidecar,
        "fsync_ms": {"p50": p50, "p99": p99}, "paced_fdatasync_ms": paced,
        "group_flush_us": flush, "summary": summary,
        "shipping_rates": rates,
        "exit_codes": codes, "table": table,
        "cells": [{"round": c.round, "mode": c.mode, "scenario": vars(c.scenario),
                   "requests_per_s": c.result.requests_per_s, "errors": c.result.errors,
                   "wrong": c.result.wrong, "checked": c.result.checked,
                   "p50_ms": c.result.latency.p50_ms, "p99_ms": c.result.latency.p99_ms,
                   "server_cpu_us": cpu_us(c.result, "server"),
                   "sidecar_cpu_us": cpu_us(c.result, "sidecar"),
                   "spool_before": c.spool_before, "spool_after": c.spool_after}
                  for c in cells],
    }, indent=2, default=str))
    print(f"results: {output}")
    problems = [f"{c.mode} c={c.scenario.concurrency}: {c.result.errors} errors, "
                f"{c.result.wrong} wrong" for c in cells if c.result.errors or c.result.wrong]
    problems += [f"{m} server exited with {code}" for m, code in codes.items() if code != 0]
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    if args.smoke:
        print("smoke ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
