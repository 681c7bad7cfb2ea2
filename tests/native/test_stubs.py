"""Every Cython kernel's ``.pyi`` stub says what the extension really takes.

For each kernel (``_bytes_codec``, ``_pack``, ``_sketch``, ``_transform``,
``_audit_record``; the spool writer ``_spool`` is a class, tested in ``test_spool``) the stub
declares exactly the extension's public functions, and each declaration, the
extension's own signature and its NumPy twin's signature agree on the parameter
names, kinds and defaults. mypy type-checks callers against the stub, so a stub
that drifted from the extension would let a wrong call through type checking.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from types import ModuleType

import pytest

# extension module → (its twin, names the extension re-exports from the twin)
KERNELS: dict[str, tuple[str, frozenset[str]]] = {
    "_bytes_codec": ("bytes_codec_py", frozenset()),
    "_pack": ("pack_py", frozenset()),
    "_sketch": ("sketch_py", frozenset({"Chi2Result", "Chi2Rows"})),
    "_transform": ("transform_py", frozenset()),
    "_audit_record": ("audit_record_py", frozenset()),
}


def _extension(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"native.{name}")
    except ImportError as exc:
        pytest.fail(f"the Cython extension native.{name} is not built: {exc}", pytrace=False)


def _stub(extension: ModuleType) -> dict[str, ast.FunctionDef]:
    path = Path(extension.__file__ or "").parent / f"{extension.__name__.rsplit('.', 1)[1]}.pyi"
    assert path.is_file(), f"{path} is missing"
    tree = ast.parse(path.read_text())
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _stub_params(node: ast.FunctionDef) -> list[tuple[str, str, bool]]:
    """(name, kind, has a default) per parameter, in the inspect module's kind names."""
    a = node.args
    positional = a.posonlyargs + a.args
    first_default = len(positional) - len(a.defaults)
    out = [
        (p.arg, "POSITIONAL_ONLY" if p in a.posonlyargs else "POSITIONAL_OR_KEYWORD",
         i >= first_default)
        for i, p in enumerate(positional)
    ]
    if a.vararg:
        out.append((a.vararg.arg, "VAR_POSITIONAL", False))
    out += [
        (p.arg, "KEYWORD_ONLY", d is not None)
        for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)
    ]
    if a.kwarg:
        out.append((a.kwarg.arg, "VAR_KEYWORD", False))
    return out


def _runtime_params(fn: object) -> list[tuple[str, str, bool]]:
    return [
        (p.name, p.kind.name, p.default is not inspect.Parameter.empty)
        for p in inspect.signature(fn).parameters.values()  # type: ignore[arg-type]
    ]


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_stub_declares_exactly_the_extension(name: str) -> None:
    _, reexported = KERNELS[name]
    extension = _extension(name)
    public = {
        n for n in dir(extension)
        if not n.startswith("_") and callable(getattr(extension, n))
        and not isinstance(getattr(extension, n), ModuleType)
    }
    assert set(_stub(extension)) == public - reexported


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_stub_extension_and_twin_signatures_agree(name: str) -> None:
    twin_name, _ = KERNELS[name]
    extension = _extension(name)
    twin = importlib.import_module(f"native.{twin_name}")
    for function, node in _stub(extension).items():
        twin_params = _runtime_params(getattr(twin, function))
        assert _stub_params(node) == twin_params, f"{name}.pyi: {function}"
        assert _runtime_params(getattr(extension, function)) == twin_params, (
            f"native.{name}.{function}")
        twin_defaults = {
            p.name: p.default for p in inspect.signature(getattr(twin, function)).parameters
            .values() if p.default is not inspect.Parameter.empty
        }
        c_defaults = {
            p.name: p.default for p in inspect.signature(getattr(extension, function))
            .parameters.values() if p.default is not inspect.Parameter.empty
        }
        assert c_defaults == twin_defaults, f"native.{name}.{function}"
