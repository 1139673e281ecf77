# One command each on a fresh machine: `make sweep` runs the default study, `make test` the tests.
# Every target creates .venv and installs the project into it when needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Reinstall whenever the dependency list changes.
STAMP := $(VENV)/.installed

.PHONY: install test lint sweep export train bench bench-full bench-quick bench-compare ui dashboard clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Parallel pytest workers (pytest-xdist): most tests wait on processes, servers and stores, so
# more workers than cores keep both cores busy. --dist loadscope hands out whole modules, so a
# module-scoped fixture runs once (loadgroup's xdist_group marks do not take with pytest 9.2).
TEST_WORKERS ?= 4

test: lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope --durations=15

sweep: $(STAMP)
	$(BIN)/python -m experiments.sweep $(ARGS)

export: $(STAMP)
	$(BIN)/python -m experiments.export $(ARGS)

train: $(STAMP)
	$(BIN)/python -m experiments.train $(ARGS)

# The standard profile (~11 min here): every headline figure with rounds enough to compare.
bench: $(STAMP)
	$(BIN)/python -m benchmarks --profile standard $(ARGS)

bench-full: $(STAMP)
	$(BIN)/python -m benchmarks --profile full $(ARGS)

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks --quick $(ARGS)

# make bench-compare BASE=folder-or-run-id NEW=folder-or-run-id [ARGS=--fail-on-regression]
bench-compare: $(STAMP)
	$(BIN)/python -m benchmarks.compare $(BASE) $(NEW) $(ARGS)

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

# Optuna's own view of the study (installs the optional `dashboard` extra on first use).
dashboard: $(STAMP)
	test -x $(BIN)/optuna-dashboard || $(BIN)/python -m pip install --quiet -e '.[dashboard]'
	$(BIN)/optuna-dashboard sqlite:///optuna.db --host 127.0.0.1 --port 8080

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
