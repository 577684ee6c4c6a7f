# One place for every command. `make demo` and `make test` work on a fresh machine
# (they install the package first); `make check` runs every check CI runs.
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install --quiet --disable-pip-version-check

.PHONY: install install-dev demo test test-fast lint typecheck contract check deploy-files clean

install:
	$(PIP_INSTALL) -e .

install-dev:
	$(PIP_INSTALL) -e '.[test,deploy]'

demo: install
	bash samples/demo.sh demo-mount

test: install-dev
	$(PYTHON) -m pytest

test-fast: install-dev
	$(PYTHON) -m pytest -m "not slow and not s3"

lint:
	$(PYTHON) -m ruff check .

typecheck:
	$(PYTHON) -m mypy

contract: install-dev
	$(PYTHON) ../shared/tools/contract_check.py --mountworks "$$(command -v mountworks)"

check: lint typecheck test
	@if [ -f ../shared/tools/contract_check.py ]; then $(MAKE) --no-print-directory contract; \
	else echo "contract check skipped: ../shared/tools/contract_check.py is not beside this checkout"; fi

# Each worker's template.yaml resources, Dockerfile stages and requirements .in, rendered
# from the registry and workers/<package>/deploy.py; relocks what changed (needs uv).
# `python container/render.py --check` only compares (tests/test_deploy.py runs it).
deploy-files:
	$(PYTHON) container/render.py

clean:
	rm -rf demo-mount .pytest_cache .mypy_cache .ruff_cache
