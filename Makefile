# make demo   create .venv if needed, run jobs/digits.yaml end to end on a local Ray, serve it
# make test   the whole test suite (unit, integration, e2e)
# make bench  the benchmarks (small sizes)
# make platform       PostgreSQL + Ceph RGW + MLflow server + Ray head/worker containers on this
#                     machine, env in .platform/env (cluster/platform/stack.py; needs root and
#                     the Debian packages listed in .ci/run)
# make platform-down  stop exactly what `make platform` started
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 first: its CPU build is on this machine's wheel path; a plain `torch` requirement
# resolved later would pull the multi-GB CUDA build from the index.
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test unit lint bench clean platform platform-down

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
	$(BIN)/ruff check runtime serve_apps tests benchmarks cluster/platform

bench: $(BIN)/mlrt
	$(BIN)/python benchmarks/digits_run.py
	$(BIN)/python benchmarks/serve_load.py --seconds 3

# the platform extra (psycopg2 for the MLflow server, boto3 for the tests) on top of dev
$(VENV)/.platform-extra: $(BIN)/mlrt pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev,platform]"
	touch $@

platform: $(VENV)/.platform-extra
	$(BIN)/python cluster/platform/stack.py up

# stdlib only: works without the venv
platform-down:
	$(PY) cluster/platform/stack.py down

clean:
	rm -rf .mlrt .pytest_cache
