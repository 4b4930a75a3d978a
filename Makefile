# Two commands matter: `make demo` and `make test`. Both build .venv on first use from the pinned set.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The Airflow 2.11 line (`make test-compat`): its own venv from its own pinned set.
COMPAT_VENV        ?= .venv-2.11
COMPAT_BIN         := $(COMPAT_VENV)/bin
COMPAT_STAMP       := $(COMPAT_VENV)/.installed
COMPAT_CONSTRAINTS := constraints-airflow-2.11.txt
# Pins apply to build dependencies (hatchling) too.
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install install-compat demo test test-compat lint format unit bench bench-smoke clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is needed, found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# Same steps as $(STAMP), with the 2.11 pins (also for the build dependencies).
install-compat: $(COMPAT_STAMP)

$(COMPAT_STAMP): export PIP_CONSTRAINT := $(CURDIR)/$(COMPAT_CONSTRAINTS)
$(COMPAT_STAMP): pyproject.toml $(COMPAT_CONSTRAINTS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is needed, found " + sys.version.split()[0])'
	test -x $(COMPAT_BIN)/python || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_BIN)/python -m pip install -q -c $(COMPAT_CONSTRAINTS) pip
	$(COMPAT_BIN)/python -m pip install -q -c $(COMPAT_CONSTRAINTS) -e ".[dev]"
	touch $(COMPAT_STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

unit: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider -m "not system"

test: lint
	$(BIN)/pytest -p no:cacheprovider

# The whole suite, system test included, on Airflow 2.11 (what differs: README, support matrix).
# The benchmark smoke test runs `make bench-smoke` in the primary venv, already done by `make test`.
test-compat: $(COMPAT_STAMP)
	$(COMPAT_BIN)/pytest -p no:cacheprovider --ignore=tests/test_bench_smoke.py

clean:
	rm -rf $(VENV) $(COMPAT_VENV) demo-output .pytest_cache .mypy_cache .ruff_cache

# Benchmarks (benchmarks/RESULTS.md): the bench extra (matplotlib, psutil, py-spy) on top of dev.
BENCH_STAMP     := $(VENV)/.installed-bench
BENCH_SMOKE_OUT ?= /tmp/smartflows-bench-smoke

$(BENCH_STAMP): $(STAMP) pyproject.toml constraints.txt
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	BENCH_COMMAND="make bench" $(BIN)/python -m benchmarks.run --out benchmarks --wait-quiet 1200

bench-smoke: $(BENCH_STAMP)
	BENCH_COMMAND="make bench-smoke" $(BIN)/python -m benchmarks.run --smoke --out $(BENCH_SMOKE_OUT)
