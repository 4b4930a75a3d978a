# Two commands matter: `make demo` and `make test`. Both build .venv on first use from the pinned set
# (scripts/install_venv.sh: uv, pinned in constraints.txt and bootstrapped into the venv; pip when
# uv cannot be had). The demo installs the package only, the tests add the dev extra.
PYTHON ?= python3
export PYTHON
VENV      ?= .venv
BIN       := $(VENV)/bin
INSTALL   := scripts/install_venv.sh
RUN_STAMP := $(VENV)/.installed-run
STAMP     := $(VENV)/.installed
# Another Airflow line (`make test-compat COMPAT=<line>`): its own venv .venv-<line> from
# constraints-airflow-<line>.txt. Lines listed in COMPAT_IGNORE_<line> skip those tests.
COMPAT             ?= 2.11
COMPAT_VENV        := .venv-$(COMPAT)
COMPAT_CONSTRAINTS := constraints-airflow-$(COMPAT).txt
COMPAT_LINES       := $(patsubst constraints-airflow-%.txt,%,$(wildcard constraints-airflow-*.txt))
# 3.0: without the system test on real Airflow services (run on 3.3 and 2.11).
COMPAT_IGNORE_3.0  := tests/system
# What the tests install: dev (test tools, S3 on moto) and storage (Azure, GCS, OpenLineage). A line
# without storage pins (3.0) installs dev only; its storage and lineage tests skip with the reason.
TEST_EXTRAS     := dev,storage
TEST_EXTRAS_3.0 := dev
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# pytest-xdist workers. The suite waits (long-polls, emulated flows, Airflow's own loops) more than
# it computes, so more workers than the machine's two cores pay off. Each worker takes whole test
# files (--dist loadfile: module fixtures such as an example's DAG run stay in one process) and has
# its own AIRFLOW_HOME, SQLite DB, emulator and moto server (tests/conftest.py).
# The system tests (tests/system) start one Airflow stack per file; the stacks mostly wait on
# their flows, so the files run side by side (one worker each), apart from the parallel pass.
# `make unit` lets idle workers take tests from busy ones (--dist worksteal): its slow files are
# few and long (the event trigger's is 58 s alone), and its module fixtures are cheap.
UNIT_WORKERS   ?= 6
TEST_WORKERS   ?= 4
SYSTEM_WORKERS ?= 3
PYTEST         := pytest -p no:cacheprovider
XDIST_TEST     := -n $(TEST_WORKERS) --dist loadfile
XDIST_SYSTEM   := -n $(SYSTEM_WORKERS) --dist loadfile
# Airflow 2's stack (gunicorn webserver) is heavier: two stacks at a time on the compat lines.
COMPAT_SYSTEM_WORKERS ?= 2
XDIST_COMPAT_SYSTEM   := -n $(COMPAT_SYSTEM_WORKERS) --dist loadfile
# A pass whose marks select nothing on a line (exit status 5) is no failure.
NONE_SELECTED_OK := || test $$? -eq 5

.PRECIOUS: .venv-%/.installed
.PHONY: install install-compat demo test test-compat test-deployment lint format unit bench bench-smoke clean

install: $(STAMP)

$(RUN_STAMP): pyproject.toml constraints.txt $(INSTALL)
	$(INSTALL) $(VENV) constraints.txt .
	touch $@

$(STAMP): pyproject.toml constraints.txt $(INSTALL)
	$(INSTALL) $(VENV) constraints.txt ".[$(TEST_EXTRAS)]"
	touch $@ $(RUN_STAMP)

install-compat: $(COMPAT_VENV)/.installed

.venv-%/.installed: pyproject.toml constraints-airflow-%.txt $(INSTALL)
	$(INSTALL) .venv-$* constraints-airflow-$*.txt ".[$(or $(TEST_EXTRAS_$*),$(TEST_EXTRAS))]"
	touch $@

demo: $(RUN_STAMP)
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The quick loop: leaves out what its file marks `slow` (a dag.test() run, an `airflow`
# subprocess, real services, soak, benchmark smoke, hundreds of MiB, a killed process; a test using
# the run_dag/airflow_db fixtures is `slow` whatever its file says).
unit: $(STAMP)
	$(BIN)/$(PYTEST) -q -m "not slow" -n $(UNIT_WORKERS) --dist worksteal

# Azurite, the Azure Blob emulator of tests/storage, comes from npm into .cache/azurite (skipped,
# with its tests, where there is no npm). Three passes: everything that can share the machine on
# TEST_WORKERS workers; then the tests marked `serial`, which never run beside that pass (under
# its contention their bounded waits time out): the system tests, one file per worker, and last
# the rest (soak, benchmark smoke, 1 GiB transfers, `airflow db migrate` + CLI runs) one at a time.
test: lint
	scripts/install_storage_emulators.sh $(VENV) constraints.txt
	$(BIN)/$(PYTEST) -m "not serial" $(XDIST_TEST)
	$(BIN)/$(PYTEST) -m "serial and system" $(XDIST_SYSTEM)
	$(BIN)/$(PYTEST) -m "serial and not system"

# The provider in a production-shaped Airflow (tests/deployment): PostgreSQL, CeleryExecutor on
# Redis, two workers, two triggerers. Installs postgresql/redis-server (root + apt-get) when missing.
test-deployment: $(STAMP)
	VENV_BIN=$(BIN) bash scripts/test_deployment.sh

# The suite on another Airflow line (what differs: README, support matrix), in the same passes
# as `make test`, without what cannot differ between lines: the tests marked `airflow_agnostic`
# (the emulator's own tests, the models, the pure rules: they ran on the primary line) and the
# benchmark smoke test (it runs `make bench-smoke` in the primary venv, already done by `make test`).
COMPAT_PYTEST = $(COMPAT_VENV)/bin/$(PYTEST) --ignore=tests/test_bench_smoke.py \
	$(addprefix --ignore=,$(COMPAT_IGNORE_$(COMPAT)))
test-compat:
	@test -f $(COMPAT_CONSTRAINTS) || { echo "no $(COMPAT_CONSTRAINTS): COMPAT is one of $(COMPAT_LINES)" >&2; exit 2; }
	$(MAKE) --no-print-directory $(COMPAT_VENV)/.installed
	$(COMPAT_PYTEST) -m "not airflow_agnostic and not serial" $(XDIST_TEST)
	$(COMPAT_PYTEST) -m "serial and system and not airflow_agnostic" $(XDIST_COMPAT_SYSTEM) $(NONE_SELECTED_OK)
	$(COMPAT_PYTEST) -m "serial and not system and not airflow_agnostic" $(NONE_SELECTED_OK)

clean:
	rm -rf $(VENV) $(addprefix .venv-,$(COMPAT_LINES)) demo-output .pytest_cache .mypy_cache .ruff_cache

# Benchmarks (benchmarks/RESULTS.md): the bench extra (matplotlib, psutil, py-spy) on top of dev.
BENCH_STAMP     := $(VENV)/.installed-bench
BENCH_SMOKE_OUT ?= /tmp/smartflows-bench-smoke

$(BENCH_STAMP): $(STAMP) pyproject.toml constraints.txt
	$(INSTALL) $(VENV) constraints.txt ".[dev,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	BENCH_COMMAND="make bench" $(BIN)/python -m benchmarks.run --out benchmarks --wait-quiet 1200

bench-smoke: $(BENCH_STAMP)
	BENCH_COMMAND="make bench-smoke" $(BIN)/python -m benchmarks.run --smoke --out $(BENCH_SMOKE_OUT)

# The documentation site (mkdocs.yml, docs/): the docs extra on top of the package, then a strict
# build (a warning fails it: dead link or anchor, missing page, unreadable docstring) into site/.
DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): pyproject.toml constraints.txt $(INSTALL)
	$(INSTALL) $(VENV) constraints.txt ".[docs]"
	touch $@

.PHONY: docs
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site
