# The two commands a newcomer needs: `make demo` and `make test`. Each creates the
# virtualenv when it is missing and installs what it needs, so a clean clone works.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck check bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Stamp files so a second `make` does not reinstall; they depend on pyproject.toml so a
# new dependency is picked up.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

# The default demo's canary is bad: `canaryctl demo` exits 1 after rolling it back, which
# is the demo working; any other failure still fails make.
demo: $(VENV)/.installed
	$(BIN)/canaryctl demo || test $$? -eq 1

# Lint and types first: a change that breaks `mypy --strict` or ruff does not land.
test: $(VENV)/.installed-test lint
	bash tests/system_deps.sh
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-test
	$(BIN)/ruff check canary analysis providers mesh cli tests benchmarks
	$(BIN)/mypy

check: lint test

# Each benchmark measures a reference in the same run and prints ratios.
bench: $(VENV)/.installed-test
	bash tests/system_deps.sh --bench
	$(BIN)/python benchmarks/judge_sim.py
	$(BIN)/python benchmarks/proxy_bench.py
	$(BIN)/python benchmarks/provider_fetch_bench.py
	$(BIN)/python benchmarks/api_bench.py
	$(BIN)/python benchmarks/report_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
