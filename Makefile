# Two commands do all the set-up on a fresh machine:
#   make demo   the simulator and an instrumented sample bot, with a summary
#   make test   the whole test suite, in both client environments
#
# The test suite runs in two virtual environments because trading-ig pins
# lightstreamer-client-lib 1.0.x while the main environment carries 2.x:
#   .venv      ig-otel, httpx, requests, lightstreamer-client-lib 2.x
#   .venv-tig  ig-otel, trading-ig, lightstreamer-client-lib 1.0.x
# Tests marked "tig" run only in .venv-tig, all others only in .venv.

PYTHON ?= python3
VENV := .venv
VENV_TIG := .venv-tig
PYTEST_ARGS ?=

.PHONY: demo test test-main test-tig lint bench venvs clean

demo: $(VENV)/.installed
	$(VENV)/bin/ig-otel demo

test: test-main test-tig

test-main: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -m "not tig" $(PYTEST_ARGS)

test-tig: $(VENV_TIG)/.installed
	$(VENV_TIG)/bin/python -m pytest -m tig $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(VENV)/.installed
	$(VENV)/bin/python -m pytest benchmarks -s

venvs: $(VENV)/.installed $(VENV_TIG)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[test,redis,instruments-any]" \
		"lightstreamer-client-lib>=2,<3" ruff
	touch $@

$(VENV_TIG)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_TIG)
	$(VENV_TIG)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_TIG)/bin/python -m pip install --quiet -e ".[test,redis]" trading-ig
	touch $@

clean:
	rm -rf $(VENV) $(VENV_TIG) .pytest_cache .benchmarks
