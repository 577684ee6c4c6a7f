# One place for every command. `make demo` and `make test` work on a fresh machine with
# only python3 (and python3-venv) and make: they create the project virtual environment
# .venv (reused when present) and install into it, never into the system's Python.
# `make check` runs every check CI runs. PYTHON=/path/to/python uses that interpreter
# (an environment of your own) instead of .venv.
VENV ?= .venv
ifeq ($(origin PYTHON),undefined)
PYTHON := $(VENV)/bin/python
OWN_VENV := $(PYTHON)
endif
PIP_INSTALL = $(PYTHON) -m pip install --disable-pip-version-check --progress-bar on
# the console scripts of $(PYTHON)'s environment (mountworks, hadolint...): found through
# it, whether or not it is on PATH
SCRIPTS = $$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
# both cores where the tests allow it (pytest-xdist, groups from tests/conftest.py)
PYTEST_JOBS ?= 2
PYTEST = $(PYTHON) -m pytest -n $(PYTEST_JOBS) --dist loadgroup

.PHONY: install install-dev demo test test-fast lint typecheck contract check deploy-files clean

$(VENV)/bin/python:
	@echo "== creating the project virtual environment $(VENV)"
	@python3 -m venv $(VENV) || { rm -rf $(VENV); echo "python3 -m venv failed: on Debian or Ubuntu, apt-get install python3-venv"; exit 1; }

# stamps: an existing .venv is reused; it is installed again only when pyproject.toml changes
$(VENV)/.installed: pyproject.toml | $(OWN_VENV)
	@echo "== installing mountworks into $(PYTHON) (the first time about a minute)"
	$(PIP_INSTALL) -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(OWN_VENV)
	@echo "== installing mountworks with its test and deploy extras into $(PYTHON) (the first time about 3 minutes)"
	$(PIP_INSTALL) -e '.[test,deploy]'
	@touch $@ $(VENV)/.installed

ifdef OWN_VENV
install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
else
install:
	$(PIP_INSTALL) -e .
install-dev:
	$(PIP_INSTALL) -e '.[test,deploy]'
endif

demo: install
	PYTHON=$(PYTHON) bash samples/demo.sh demo-mount

test: install-dev
	@echo "== the whole test suite (about 5 minutes on 2 cores)"
	$(PYTEST)

test-fast: install-dev
	@echo "== the tests without the slow and S3-backed ones (under 2 minutes on 2 cores)"
	$(PYTEST) -m "not slow and not s3"

# with PYTHON= given, lint and typecheck use that environment as it is (no install)
lint: $(if $(OWN_VENV),install-dev)
	$(PYTHON) -m ruff check .

typecheck: $(if $(OWN_VENV),install-dev)
	$(PYTHON) -m mypy

contract: $(if $(OWN_VENV),install-dev)
	$(PYTHON) ../shared/tools/contract_check.py --mountworks "$(SCRIPTS)/mountworks"

check: lint typecheck test
	@if [ -f ../shared/tools/contract_check.py ]; then $(MAKE) --no-print-directory contract; \
	else echo "contract check skipped: ../shared/tools/contract_check.py is not beside this checkout"; fi

# Each worker's template.yaml resources, Dockerfile stages and requirements .in, rendered
# from the registry and workers/<package>/deploy.py; relocks what changed (needs uv).
# `python container/render.py --check` only compares (tests/test_deploy.py runs it).
deploy-files: install-dev
	$(PYTHON) container/render.py

clean:
	rm -rf demo-mount .pytest_cache .mypy_cache .ruff_cache
