# The README's two commands: `make serve` (default service) and `make test` (the test suite).
# Each creates .venv and installs the project when needed; the CPU install stays a CPU install
# (torch==2.13.0 is pinned in pyproject.toml; flash-attn lives in the optional [gpu] extra).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: serve test lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[test]' > $(VENV)/pip.log 2>&1 \
		|| { tail -40 $(VENV)/pip.log; exit 1; }
	$(BIN)/python -c "import torch, ray, transformers, serve_app, deployments"
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/embedserve serve configs/local.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -ra --durations=15

clean:
	rm -rf $(VENV)
