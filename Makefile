# synod: `make test` and `make demo` are all a fresh machine needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint typecheck unit bench clean stellar-tools stellar-tools-if-node browser-test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) stellar-tools-if-node
	$(BIN)/pytest -q -p no:cacheprovider -n 2

test: lint typecheck unit

demo: $(STAMP)
	$(BIN)/synod demo

bench: $(STAMP)
	for script in benchmarks/*_bench.py; do $(BIN)/python $$script || exit 1; done

# An independent implementation of Stellar's overlay (stellarbeat's crawler library, the
# versions pinned in tools/stellar/package-lock.json) for tests/stellar/test_stellar_interop.py.
# `make test` installs it wherever Node.js and npm are (the interop tests skip, saying why,
# on a machine without them).
STELLAR_TOOLS := build/stellar-tools
$(STELLAR_TOOLS)/.installed: tools/stellar/package.json tools/stellar/package-lock.json
	mkdir -p $(STELLAR_TOOLS)
	cp tools/stellar/package.json tools/stellar/package-lock.json $(STELLAR_TOOLS)/
	cd $(STELLAR_TOOLS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

stellar-tools: $(STELLAR_TOOLS)/.installed

stellar-tools-if-node:
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
		$(MAKE) --no-print-directory stellar-tools; \
	else echo "Node.js/npm not found: the Stellar interop tests will be skipped"; fi

# The FBAS report rendered in headless Chromium (Debian's package, installed when
# absent); the screenshot is checked and kept as build/fbas-report.png.  Not part of
# `make test`, which needs no browser.
browser-test: $(STAMP)
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		(apt-get update && apt-get install -y --no-install-recommends chromium)
	$(BIN)/python tests/fbas/browser_check.py

clean:
	rm -rf $(VENV) build src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
