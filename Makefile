# make demo   create .venv if needed, run jobs/digits.yaml end to end on a local Ray, serve it
# make test   the whole test suite (unit, integration, e2e)
# make bench  the benchmarks (small sizes)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 first: its CPU build is on this machine's wheel path; a plain `torch` requirement
# resolved later would pull the multi-GB CUDA build from the index.
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test unit lint bench clean

$(BIN)/mlrt: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(BIN)/mlrt

# ends by serving the champion it just registered: one real prediction over HTTP, then stop
demo: $(BIN)/mlrt
	$(BIN)/mlrt run jobs/digits.yaml
	$(BIN)/mlrt serve jobs/digits.yaml --smoke --port 0

test: $(BIN)/mlrt
	$(BIN)/python -m pytest tests

unit: $(BIN)/mlrt
	$(BIN)/python -m pytest tests/unit -q

lint: $(BIN)/mlrt
	$(BIN)/ruff check runtime serve_apps tests benchmarks

bench: $(BIN)/mlrt
	$(BIN)/python benchmarks/digits_run.py
	$(BIN)/python benchmarks/serve_load.py --seconds 3

clean:
	rm -rf .mlrt .pytest_cache
