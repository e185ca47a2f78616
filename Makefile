# The two commands a user needs (see README.md):
#   make demo   set up .venv from the lock file, then run `v6 demo`
#   make test   set up .venv, then lint, type-check and run the whole test suite
# Only Python >= 3.11 and make are needed; everything else comes from requirements.lock.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.v6-installed

.PHONY: setup demo test lint typecheck pytest lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "V6 needs Python >= 3.11; set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

demo: setup
	$(BIN)/v6 demo

lint: setup
	$(BIN)/ruff check core tasks flows deployments tests benchmarks
	$(BIN)/ruff format --check core tasks flows deployments tests benchmarks

typecheck: setup
	$(BIN)/mypy core

# pytest exits 5 when it collected nothing: a suite that ran no test is not a pass.
# Two workers (one per core on the 2-core target machine), one test file per worker at a
# time: much of the suite waits on sockets, subprocesses and Prefect's API, not the CPU.
PYTEST_ARGS ?= -n auto --dist loadfile
pytest: setup
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose" >&2; exit 1; fi; \
	exit $$rc

test: lint typecheck pytest

# Regenerate the lock after changing dependencies in pyproject.toml.
lock: setup
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
