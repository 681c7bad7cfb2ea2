"""Build steps that pyproject.toml cannot express.

1. gRPC/protobuf stubs are generated from ``proto/`` with grpcio-tools into
   ``server/protocol/`` (mirroring the proto folders) with package-relative imports,
   so our ``inference.*`` modules never become top-level packages. They are never
   committed; every build (wheel, sdist, ``pip install -e .``) regenerates them.
2. Cython extensions are listed explicitly in ``EXTENSIONS`` with directives set
   centrally; ``OSPREY_CYTHON_DEBUG=1`` builds them with annotate, linetrace and
   bounds checks on; ``OSPREY_SANITIZE=address`` builds them with AddressSanitizer
   (``make sanitize``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from setuptools import Command, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO_ROOT = ROOT / "proto"
STUB_PACKAGE = ROOT / "server" / "protocol"

# (module name, sources): every kernel has a pure-Python twin beside it.
EXTENSIONS: list[tuple[str, list[str]]] = [
    ("native._bytes_codec", ["native/_bytes_codec.pyx"]),
    ("native._pack", ["native/_pack.pyx"]),
    ("native._sketch", ["native/_sketch.pyx"]),
    ("native._transform", ["native/_transform.pyx"]),
    ("native._spool", ["native/_spool.pyx"]),
    ("native._audit_record", ["native/_audit_record.pyx"]),
]


def _relative_import(from_pkg: tuple[str, ...], target_pkg: tuple[str, ...]) -> str:
    """The relative module path from package ``from_pkg`` to package ``target_pkg``."""
    common = 0
    while (
        common < len(from_pkg)
        and common < len(target_pkg)
        and from_pkg[common] == target_pkg[common]
    ):
        common += 1
    dots = "." * (len(from_pkg) - common + 1)
    return dots + ".".join(target_pkg[common:])


def generate_stubs() -> list[Path]:
    """Run protoc over every ``proto/**/*.proto``; return the files written."""
    import grpc_tools
    from grpc_tools import protoc  # build requirement

    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files under {PROTO_ROOT}")
    proto_packages = {p.parent.relative_to(PROTO_ROOT).parts for p in protos}
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={STUB_PACKAGE}",
        f"--pyi_out={STUB_PACKAGE}",
        f"--grpc_python_out={STUB_PACKAGE}",
        *[str(p.relative_to(PROTO_ROOT)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on " + ", ".join(map(str, protos)))

    written: list[Path] = []
    for pkg in sorted(proto_packages):
        folder = STUB_PACKAGE.joinpath(*pkg)
        for depth in range(1, len(pkg) + 1):
            init = STUB_PACKAGE.joinpath(*pkg[:depth], "__init__.py")
            if not init.exists():
                init.write_text('"""Generated from proto/ at build time; do not edit."""\n')
        for path in sorted(folder.glob("*_pb2*.py*")):
            text = path.read_text()

            def rewrite(match: re.Match[str], pkg: tuple[str, ...] = pkg) -> str:
                target = tuple(match.group(2).split("."))
                if target not in proto_packages:
                    return match.group(0)
                return f"{match.group(1)}from {_relative_import(pkg, target)} import"

            text = re.sub(r"^(\s*)from ([A-Za-z_][\w.]*) import", rewrite, text, flags=re.M)
            path.write_text(text)
            written.append(path)
    return written


class GenerateStubs(Command):
    """``python setup.py generate_stubs``: regenerate the gRPC stubs in place."""

    description = "generate gRPC stubs from proto/ into server/protocol/"
    user_options: list[tuple[str, str | None, str]] = []

    def initialize_options(self) -> None:
        pass

    def finalize_options(self) -> None:
        pass

    def run(self) -> None:
        for path in generate_stubs():
            print(f"generated {path.relative_to(ROOT)}")


class BuildPyWithStubs(build_py):
    """Generates the stubs before collecting modules (wheel and editable installs)."""

    def run(self) -> None:
        self.run_command("generate_stubs")
        # find_packages ran before the stub folders existed: add them now.
        for init in sorted(STUB_PACKAGE.rglob("__init__.py")):
            name = ".".join(init.parent.relative_to(ROOT).parts)
            if self.packages is not None and name not in self.packages:
                self.packages.append(name)
        super().run()


def extensions() -> list[object]:
    if not EXTENSIONS:
        return []
    import numpy
    from Cython.Build import cythonize
    from setuptools import Extension

    debug = os.environ.get("OSPREY_CYTHON_DEBUG") == "1"
    directives = {
        "language_level": "3",
        "boundscheck": debug,
        "wraparound": False,
        "cdivision": True,
        "initializedcheck": debug,
        "linetrace": debug,
    }
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
    if debug:
        macros.append(("CYTHON_TRACE_NOGIL", "1"))
    # `make sanitize`: AddressSanitizer builds, plus a planted overflow that proves it.
    sanitize = os.environ.get("OSPREY_SANITIZE") == "address"
    compile_args: list[str] = []
    link_args: list[str] = []
    listed = list(EXTENSIONS)
    if sanitize:
        compile_args = ["-fsanitize=address", "-fno-omit-frame-pointer", "-O1", "-g"]
        link_args = ["-fsanitize=address"]
        listed.append(("native._asan_probe", ["native/_asan_probe.pyx"]))
    exts = [
        Extension(
            name,
            sources,
            include_dirs=[numpy.get_include()],
            define_macros=macros,
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        )
        for name, sources in listed
    ]
    return list(cythonize(exts, compiler_directives=directives, annotate=debug))


setup(
    cmdclass={"generate_stubs": GenerateStubs, "build_py": BuildPyWithStubs},
    ext_modules=extensions(),
)
