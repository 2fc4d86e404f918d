# Set-up and everyday commands. `make demo` runs the main job on the embedded phantom; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= runs/demo

.PHONY: install demo readme-results robustness-results external-results test lint bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# Without nvidia-smi, pin torch first so pip never resolves an unpinned (CUDA, multi-GB) torch; on plain PyPI set
	@# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu for its CPU build (this project's machines have it locally).
	$(BIN)/python -c "import torch" 2>/dev/null || command -v nvidia-smi >/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mai-aug compare --out $(OUT)

# Regenerate README's demo results (tables, sentences, figure) from the current code: the demo + docs/readme_results.py.
# A fresh folder, so no run made by older code is reused.
README_OUT ?= runs/readme
readme-results: $(STAMP)
	rm -rf $(README_OUT)
	$(BIN)/mai-aug compare --out $(README_OUT)
	$(BIN)/python docs/readme_results.py $(README_OUT)

# The robustness demo (16 to 18 minutes on an otherwise idle 2-core CPU: docs/analyses.md, "The robustness demo")
# and docs/analyses.md's block of its generated findings and figures.
ROBUSTNESS_OUT ?= runs/robustness
robustness-results: $(STAMP)
	rm -rf $(ROBUSTNESS_OUT)
	$(BIN)/mai-aug compare --preset robustness --out $(ROBUSTNESS_OUT)
	$(BIN)/python docs/robustness_results.py $(ROBUSTNESS_OUT)

# The external-site demo (about 10 minutes on an otherwise idle 2-core CPU) and README's block of its findings.
EXTERNAL_OUT ?= runs/external
external-results: $(STAMP)
	rm -rf $(EXTERNAL_OUT)
	$(BIN)/mai-aug compare --preset external --out $(EXTERNAL_OUT)
	$(BIN)/python docs/external_results.py $(EXTERNAL_OUT)

lint: $(STAMP)
	$(BIN)/ruff check mai_aug workflows tests benchmarks docs

test: lint
	@# One worker per core; whole files per worker, so module fixtures (one trained run, one comparison) are built once.
	$(BIN)/python -m pytest -q -n auto --dist loadfile

bench: $(STAMP)
	$(BIN)/python benchmarks/split_speed.py
	$(BIN)/python benchmarks/phantom_speed.py
	$(BIN)/python benchmarks/bootstrap_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
