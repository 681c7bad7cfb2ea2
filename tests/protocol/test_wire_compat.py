"""Osprey's inference protocol must match tritonclient's, message by message.

Our stubs and tritonclient's both define ``inference.*`` in protobuf's default
descriptor pool, so neither is imported here: two subprocesses each dump one side's
descriptors (``tests/protocol/descriptor_dump.py``) and this module compares the
JSON. Every message, enum and RPC is its own test case, so a failure names it and
lists the fields that differ.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SIDES = ("ours", "triton")


@functools.cache
def _dump(side: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.protocol.descriptor_dump", side],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        hint = ""
        if side == "ours":
            hint = " (are the stubs generated? run `python setup.py generate_stubs`)"
        raise RuntimeError(f"dumping the {side!r} descriptors failed{hint}:\n{proc.stderr.strip()}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def _dumps() -> tuple[dict[str, Any], dict[str, Any]]:
    return _dump("ours"), _dump("triton")


def _names(section: str) -> list[str]:
    """Union of both sides' keys in one section; a placeholder if a dump fails."""
    try:
        ours, triton = _dumps()
    except Exception:
        # The test body calls _dumps() again and fails with the real error.
        return ["<descriptor dump failed>"]
    return sorted(set(ours[section]) | set(triton[section]))


def _methods() -> list[str]:
    try:
        ours, triton = _dumps()
    except Exception:
        return ["<descriptor dump failed>"]
    names: set[str] = set()
    for dump in (ours, triton):
        for service, desc in dump["services"].items():
            names.update(f"{service}.{method}" for method in desc["methods"])
    return sorted(names)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "message" in metafunc.fixturenames:
        metafunc.parametrize("message", _names("messages"))
    if "enum" in metafunc.fixturenames:
        metafunc.parametrize("enum", _names("enums"))
    if "method" in metafunc.fixturenames:
        metafunc.parametrize("method", _methods())


def _fmt(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def diff(ours: Any, triton: Any, path: str = "") -> list[str]:
    """Human-readable differences between two JSON values, one line each."""
    where = path or "<root>"
    if isinstance(ours, dict) and isinstance(triton, dict):
        lines: list[str] = []
        for key in sorted(set(ours) | set(triton)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in ours:
                lines.append(f"{sub}: missing in ours (triton: {_fmt(triton[key])})")
            elif key not in triton:
                lines.append(f"{sub}: not in triton (ours: {_fmt(ours[key])})")
            else:
                lines.extend(diff(ours[key], triton[key], sub))
        return lines
    if ours != triton:
        return [f"{where}: ours {_fmt(ours)} != triton {_fmt(triton)}"]
    return []


def _compare(section: str, name: str) -> None:
    ours, triton = _dumps()
    mine, theirs = ours[section].get(name), triton[section].get(name)
    assert mine is not None or theirs is not None, f"{name} is in neither dump"
    assert mine is not None, f"{name} is missing from Osprey's protos"
    assert theirs is not None, f"{name} is not in tritonclient's protos (remove it)"
    problems = diff(mine, theirs)
    assert not problems, f"{name} differs from tritonclient's:\n  " + "\n  ".join(problems)


def test_message(message: str) -> None:
    """Fields (number, type, label, type name, oneof, map) and nesting of one message."""
    _compare("messages", message)


def test_enum(enum: str) -> None:
    """Values (name -> number) of one enum."""
    _compare("enums", enum)


def test_method(method: str) -> None:
    """Request/response types and streaming flags of one RPC."""
    ours, triton = _dumps()
    service, _, name = method.rpartition(".")
    mine = ours["services"].get(service, {}).get("methods", {}).get(name)
    theirs = triton["services"].get(service, {}).get("methods", {}).get(name)
    assert mine is not None, f"RPC {method} is missing from Osprey's protos"
    assert theirs is not None, f"RPC {method} is not in tritonclient's protos (remove it)"
    problems = diff(mine, theirs)
    assert not problems, f"RPC {method} differs:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("section", ["files", "services"])
def test_file_and_service_level(section: str) -> None:
    """Package, syntax, what each file declares, and service-level options."""
    ours, triton = _dumps()
    problems = diff(ours[section], triton[section], section)
    assert not problems, "\n  ".join([f"{section} differ:", *problems])


def test_dumps_are_identical() -> None:
    """Catch-all: the whole documents agree (also covers anything added to the dump)."""
    ours, triton = _dumps()
    problems = diff(ours, triton)
    assert not problems, "descriptors differ:\n  " + "\n  ".join(problems[:50])
    assert ours["messages"], "the dump found no messages"
    assert "inference.GRPCInferenceService" in ours["services"]


def test_diff_names_the_field() -> None:
    """The diff helper points at the message and field that differ."""
    mine = {"fields": {"backend": {"number": 17}, "extra": {"number": 99}}}
    theirs = {"fields": {"backend": {"number": 18}, "gone": {"number": 1}}}
    assert diff(mine, theirs, "inference.ModelConfig") == [
        "inference.ModelConfig.fields.backend.number: ours 17 != triton 18",
        'inference.ModelConfig.fields.extra: not in triton (ours: {"number": 99})',
        'inference.ModelConfig.fields.gone: missing in ours (triton: {"number": 1})',
    ]
