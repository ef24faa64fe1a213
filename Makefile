# `make test` and `make demo` work on a fresh machine: both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo venv browser wheel-smoke clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The whole suite; it ends by listing every skip, and a skip that is not one of the
# platform limits in tests/conftest.py fails it.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/imgdedup demo

# Debian's Chromium for the report's browser test (tests/jobs/test_report_browser.py),
# which never installs it itself. Needs root and apt; does nothing when it is there.
browser:
	test -x /usr/bin/chromium || { apt-get update && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }
	/usr/bin/chromium --version

# Build the wheel, install it into a fresh venv outside the repository and run it there.
wheel-smoke:
	bash scripts/ci_wheel_smoke.sh

clean:
	rm -rf $(VENV) demo-out dedup-store
