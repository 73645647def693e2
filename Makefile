# synod: `make test` and `make demo` are all a fresh machine needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint typecheck unit bench clean stellar-tools browser-test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -n 2

test: lint typecheck unit

demo: $(STAMP)
	$(BIN)/synod demo

bench: $(STAMP)
	for script in benchmarks/*_bench.py; do $(BIN)/python $$script || exit 1; done

# An independent implementation of Stellar's overlay (stellarbeat's crawler library) for
# tests/stellar/test_stellar_interop.py, which is skipped until this has run.
stellar-tools:
	npm install --prefix build/stellar-tools --no-audit --no-fund \
		@stellarbeat/js-stellar-node-connector@7.0.1

# The FBAS report rendered in headless Chromium (Debian's package, installed when
# absent); the screenshot is checked and kept as build/fbas-report.png.  Not part of
# `make test`, which needs no browser.
browser-test: $(STAMP)
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		(apt-get update && apt-get install -y --no-install-recommends chromium)
	$(BIN)/python tests/fbas/browser_check.py

clean:
	rm -rf $(VENV) build src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
