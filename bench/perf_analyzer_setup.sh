#!/usr/bin/env bash
# Install Triton's perf_analyzer in a venv of its own, idempotently, and print where it is.
#
#   bash bench/perf_analyzer_setup.sh        # or: make perf-analyzer
#
# The binary ships inside the tritonclient 2.51.0 wheel (newer wheels need a newer glibc
# than Debian 12 has). It links against libcudart.so.12 (from the nvidia-cuda-runtime-cu12
# wheel: only loaded, no GPU needed) and libb64.so.0d (Debian's libb64-0d). It gets a venv
# of its own because tritonclient 2.51 pins protobuf/grpcio differently from the project.
#
# Environment: PERF_ANALYZER_VENV (default .venv-perf at the repository root), PYTHON
# (default python3). The last two lines printed are `PERF_ANALYZER=...` and
# `LD_LIBRARY_PATH=...`; bench/perf_analyzer.py finds the same paths by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

TRITONCLIENT_VERSION=2.51.0
VENV="${PERF_ANALYZER_VENV:-.venv-perf}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.perf-analyzer-$TRITONCLIENT_VERSION"
start=$(date +%s)

if [ ! -f "$STAMP" ] || [ ! -x "$VENV/bin/perf_analyzer" ]; then
    echo "perf_analyzer: installing tritonclient[grpc]==$TRITONCLIENT_VERSION into $VENV"
    test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        "tritonclient[grpc]==$TRITONCLIENT_VERSION" nvidia-cuda-runtime-cu12
    touch "$STAMP"
fi

if ! /sbin/ldconfig -p | grep -q 'libb64\.so\.0d'; then
    echo "perf_analyzer: installing libb64-0d (Debian)"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || {
            echo "perf_analyzer: need root (or sudo) to apt-get install libb64-0d" >&2
            exit 1
        }
        SUDO="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q libb64-0d >/dev/null 2>&1 \
        || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q libb64-0d >/dev/null; }
fi

CUDART_LIB=$(ls -d "$VENV"/lib/python3*/site-packages/nvidia/cuda_runtime/lib | head -n 1)
BIN="$(cd "$VENV/bin" && pwd)/perf_analyzer"
LIB="$(cd "$CUDART_LIB" && pwd)"
# A binary that cannot load its libraries fails here, not in the middle of a benchmark.
version=$(LD_LIBRARY_PATH="$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$BIN" --version 2>&1)
echo "perf_analyzer: $version, ready in $(( $(date +%s) - start ))s"
echo "PERF_ANALYZER=$BIN"
echo "LD_LIBRARY_PATH=$LIB"
