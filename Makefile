# The two commands: `make run` starts the whole stack, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint system-deps bench clean

# Bootstraps the virtual environment from scratch when it is missing or stale.
.venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian packages the tests drive for real (nginx, Chromium, promtool).
system-deps:
	./scripts/system-deps.sh

run: .venv
	$(BIN)/python -m deploy.stack

lint: .venv
	$(BIN)/ruff check .
	$(BIN)/bandit --quiet --severity-level medium --recursive services shared

test: .venv system-deps lint
	$(BIN)/python -m pytest

bench: .venv system-deps
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
