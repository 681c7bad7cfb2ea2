#!/usr/bin/env bash
# Install MLServer (Seldon) with its scikit-learn runtime in a venv of its own, idempotently,
# and print where it is: the peer server bench/mlserver.py starts beside Osprey.
#
#   bash bench/mlserver_setup.sh        # or: make mlserver
#
# MLServer 1.7.1 serves under uvloop, and breaks with uvloop 0.23: 0.21.0 is pinned.
# scikit-learn, joblib and numpy are pinned too, because the model artifact
# (bench/mlserver.py writes it with this venv's python) is a pickle that must be loaded by
# the very scikit-learn that wrote it. A venv of its own because MLServer pins fastapi,
# pydantic and opentelemetry, none of which the project needs.
#
# Environment: MLSERVER_VENV (default .venv-mlserver at the repository root), PYTHON
# (default python3; MLServer 1.7.1 wants Python 3.9 to 3.12). The last line printed is
# `MLSERVER=...`; bench/mlserver.py finds the same path by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

MLSERVER_VERSION=1.7.1
PACKAGES=(
    "mlserver==$MLSERVER_VERSION"
    "mlserver-sklearn==$MLSERVER_VERSION"
    "uvloop==0.21.0"
    "scikit-learn==1.9.1"
    "joblib==1.6.0"
    "numpy==2.4.6"
)
VENV="${MLSERVER_VENV:-.venv-mlserver}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.mlserver-$(echo "${PACKAGES[*]}" | md5sum | cut -c1-12)"
start=$(date +%s)

if [ ! -f "$STAMP" ] || [ ! -x "$VENV/bin/mlserver" ]; then
    echo "mlserver: installing ${PACKAGES[*]} into $VENV"
    test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PACKAGES[@]}"
    rm -f "$VENV"/.mlserver-*
    touch "$STAMP"
fi

BIN="$(cd "$VENV/bin" && pwd)/mlserver"
# An install that cannot import its runtime fails here, not in the middle of a benchmark.
version=$("$VENV/bin/python" -c \
    "import mlserver, mlserver_sklearn, sklearn, uvloop; print(f'mlserver {mlserver.__version__}, scikit-learn {sklearn.__version__}, uvloop {uvloop.__version__}')")
echo "mlserver: $version, ready in $(( $(date +%s) - start ))s"
echo "MLSERVER=$BIN"
