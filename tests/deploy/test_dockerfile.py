"""Dockerfile.gpu without a Docker engine: hadolint, and the policy the issue sets.

The policy: a pinned CUDA 13 + cuDNN 9 runtime base that matches the onnxruntime-gpu
pin, a multi-stage build whose runtime stage has no compilers, a non-root user,
``osprey serve`` on 0.0.0.0 with TLS from a mounted secret (never ``--insecure`` by
default), gRPC health as the health check, ports 8001/8002, nothing fetched by ADD.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .dockerfile import DOCKERFILE, REPO_ROOT, Stage, copied_heredoc, healthcheck, load

BIN = Path(sys.executable).parent
CUDA_BASE = re.compile(
    r"^(?:docker\.io/|nvcr\.io/)?nvidia/cuda:13\.0\.\d+-cudnn-runtime-ubuntu\d{2}\.\d{2}$"
)
COMPILERS = ("gcc", "g++", "clang", "build-essential", "python3-dev", "cython")


def _tool(name: str) -> str:
    """A console script of this environment (the `test` extra installs it), else PATH."""
    found = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]' brings it")
    return found


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return load()


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_hadolint_is_clean() -> None:
    """Every finding, down to 'info', fails; deliberate exceptions are inline ignores."""
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_base_image_is_a_pinned_cuda13_cudnn_runtime(stages: list[Stage], final: Stage) -> None:
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.base in names:
            continue
        image, _, tag = stage.base.rpartition(":")
        assert image and tag and "/" not in tag, f"{stage.base}: pin a tag"
        assert tag != "latest", f"{stage.base}: pin a release, not latest"
    assert CUDA_BASE.match(final.image), (
        f"runtime base {final.image}: onnxruntime-gpu 1.31 needs the CUDA 13 runtime with "
        f"cuDNN 9 (nvidia/cuda:13.0.x-cudnn-runtime-ubuntuYY.MM)"
    )


def test_gpu_extra_matches_the_base_image() -> None:
    """The image installs the `gpu` extra, which pins the CUDA 13 build of ORT."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["gpu"] == ["onnxruntime-gpu>=1.31,<1.32"]
    runs = " ".join(i.args for s in load() for i in s.all_instructions("RUN"))
    assert re.search(r"pip install [^&]*\"\.\[gpu\]\"", runs), runs


def test_multi_stage_build_leaves_compilers_behind(stages: list[Stage], final: Stage) -> None:
    build = [s for s in stages if s is not final]
    assert build, "the compilers belong in a build stage"
    build_runs = " ".join(i.args for s in build for i in s.instructions if i.keyword == "RUN")
    assert "gcc" in build_runs and "python3-dev" in build_runs
    runtime_runs = " ".join(i.args for i in final.all_instructions("RUN"))
    for tool in COMPILERS:
        assert not re.search(rf"(?<![\w-]){re.escape(tool)}(?![\w-])", runtime_runs), tool
    copies = [i.args for i in final.instructions if i.keyword == "COPY"]
    assert any(c.startswith("--from=build ") for c in copies), copies
    # only the built environment crosses over, not the sources
    assert not [i for i in final.all_instructions("COPY") if " . " in f" {i.args} "]


def test_runs_as_a_non_root_user(final: Stage) -> None:
    users = final.all_instructions("USER")
    entry = final.last("ENTRYPOINT")
    assert users and entry and users[-1].line < entry.line, "USER before ENTRYPOINT"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), user
    # numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd
    assert user.isdigit() and int(user) >= 1000, user


def test_entrypoint_serves_on_all_interfaces_with_tls_by_default(final: Stage) -> None:
    entry = final.last("ENTRYPOINT")
    assert entry is not None
    argv = entry.exec_form
    assert argv is not None, "exec form, so osprey is PID 1 and gets SIGTERM"
    assert argv[:2] == ["osprey", "serve"], argv
    assert argv[argv.index("--host") + 1] == "0.0.0.0", argv
    cmd = final.last("CMD")
    words = argv + ((cmd.exec_form or []) if cmd else [])
    assert "--insecure" not in words, "plaintext only when the operator says so"
    env = final.env()
    assert "OSPREY_INSECURE" not in env
    tls = [env.get(k, "") for k in ("OSPREY_TLS_CERT", "OSPREY_TLS_KEY", "OSPREY_TLS_CLIENT_CA")]
    assert all(tls), f"TLS files come from a mounted secret: {tls}"
    assert len({str(Path(p).parent) for p in tls}) == 1, tls
    assert [Path(p).name for p in tls] == ["tls.crt", "tls.key", "ca.crt"]


def test_osprey_home_is_a_volume_owned_by_the_user(final: Stage) -> None:
    home = final.env()["OSPREY_HOME"]
    volumes = [v for i in final.all_instructions("VOLUME") for v in i.exec_form or i.args.split()]
    assert home in volumes
    workdir = final.last("WORKDIR")
    assert workdir is not None and workdir.args == home
    runs = " ".join(i.args for i in final.all_instructions("RUN"))
    user = final.all_instructions("USER")[-1].args.split(":")[0]
    assert re.search(rf"--uid {user}\b", runs), "the USER's uid is created in the image"
    assert re.search(rf"install -d -o \S+ -g \S+ -m 0?7[0-5]0 {re.escape(home)}", runs)


def test_exposes_grpc_and_metrics(final: Stage) -> None:
    ports = {p.split("/")[0] for i in final.all_instructions("EXPOSE") for p in i.args.split()}
    assert ports == {"8001", "8002"}


def test_health_check_is_grpc_health(final: Stage) -> None:
    instruction = final.last("HEALTHCHECK")
    assert instruction is not None
    check = healthcheck(instruction)
    assert check.command == ["osprey-healthcheck"], check.command
    assert "start-period" in check.options, "readiness waits for model warm-up"
    script = copied_heredoc(final, "/usr/local/bin/osprey-healthcheck")
    assert "grpc_health.v1" in script and "HealthStub" in script
    assert 'int(setting("OSPREY_GRPC_PORT", "8001"))' in script
    compile(script, "osprey-healthcheck", "exec")


def test_health_check_script_passes_ruff(final: Stage) -> None:
    script = copied_heredoc(final, "/usr/local/bin/osprey-healthcheck")
    result = subprocess.run(
        [_tool("ruff"), "check", "--no-cache", "--stdin-filename", "osprey_healthcheck.py", "-"],
        input=script, capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_nothing_is_fetched_by_add(stages: list[Stage]) -> None:
    adds = [i for s in stages for i in s.instructions if i.keyword == "ADD"]
    assert not [a for a in adds if re.search(r"(https?|git|ssh)://|git@", a.args)], adds


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "build", "**/__pycache__", "native/*.so",
                  "server/protocol/inference", "tests"):
        assert entry in ignored, entry
