# diffleet: the commands a newcomer, a developer and CI use. README.md explains them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

STATE := .diffleet
UV := $(STATE)/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := 3.11
# Installed packages come with their bytecode: every process a test starts (operators,
# workers, APIs) would otherwise compile kubernetes_asyncio, torch and diffusers anew
# wherever PYTHONDONTWRITEBYTECODE is set (4.9 s of CPU instead of 1.3 s per operator).
export UV_COMPILE_BYTECODE := 1
VENV_STAMP := .venv/.synced

.PHONY: help setup packages tools venv up up-infra down status env kubeconfig \
        demo test lint format typecheck pytest fuzz chaos kind-up bench-setup bench-dispatch bench-worker bench-features bench-api bench-autoscale bench-replay clean openapi

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: packages venv tools ## install and build everything the stack and tests need (idempotent)

packages: ## Debian packages: RabbitMQ, PostgreSQL, Prometheus, Chromium
	@hack/install-packages.sh

$(UV): hack/install-uv.sh hack/versions.env
	@hack/install-uv.sh

venv: $(VENV_STAMP) ## the development .venv: all four packages plus the test tools

$(VENV_STAMP): $(UV) uv.lock pyproject.toml core/pyproject.toml operator/pyproject.toml api/pyproject.toml gpu-worker/pyproject.toml
	@$(UV) sync --frozen --quiet
	@touch $@

tools: venv ## build the pinned Go tools (hack/versions.env) and kubeconform's offline schemas into the cache
	@hack/build-tools.sh
	@.venv/bin/python -m hack.kube_schemas >/dev/null

up-infra: setup ## start the infrastructure: Kubernetes, kwok GPU nodes, RabbitMQ, PostgreSQL, S3
	@hack/stack.sh up-infra

up: models ## start the infrastructure, register the models, install the platform (the chart)
	@hack/stack.sh up

down: ## stop every process of the local stack
	@hack/stack.sh down

status: ## show which processes of the local stack and pods of the platform run
	@hack/stack.sh status

env: ## print exports for the stack: eval "$$(make -s env)"
	@hack/stack.sh env

kubeconfig: ## print the path of the admin kubeconfig
	@hack/stack.sh kubeconfig

demo: up ## run the main job end to end
	@hack/demo.sh

.PHONY: models
models: up-infra ## build the test models (cached outside the tree) and register them in diffleet-system
	@eval "$$(hack/stack.sh env)" && .venv/bin/python -m hack.models ensure

lint: venv ## ruff lint and format check
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .

format: venv ## apply ruff's formatting and safe fixes
	@.venv/bin/ruff format .
	@.venv/bin/ruff check --fix .

# mypy's cache lives with the tool cache, outside the clone: a fresh clone is checked in
# seconds instead of 90 s (mypy re-reads any file whose hash changed).
DIFFLEET_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/diffleet
typecheck: venv ## mypy, strict
	@.venv/bin/mypy --cache-dir "$(DIFFLEET_CACHE)/mypy"

# Stack tests mostly wait on processes, so they share the stack in PYTEST_WORKERS processes
# (tests/support/groups.py keeps some apart); the disruptive ones, which stop and restart
# the stack, run after them in one process. Both runs go on when one fails.
# 2: three workers on 2 cores pushed timing checks (a pool's decision within 3 s) over.
# Each run's JUnit report (every test's time) is kept in $(STATE)/reports/.
PYTEST_WORKERS ?= 2
pytest: setup ## the test suite, in PYTEST_WORKERS processes (starts the stack when it is not running)
	@status=0; \
	.venv/bin/pytest -n $(PYTEST_WORKERS) -m "not disruptive" --junitxml=$(STATE)/reports/parallel.xml || status=$$?; \
	.venv/bin/pytest -m disruptive --junitxml=$(STATE)/reports/disruptive.xml || status=$$?; \
	exit $$status

test: setup lint typecheck pytest ## everything CI runs: lint, types, tests

FUZZ_EXAMPLES ?= 200
fuzz: setup ## the API's property-based fuzz suite, longer than in make test (FUZZ_EXAMPLES=200)
	@DIFFLEET_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) .venv/bin/pytest tests/api/test_schemathesis.py

chaos: setup ## 1,000 jobs while every component is SIGKILLed and restarted; figures in bench/results/chaos.md
	@DIFFLEET_CHAOS_SIZE=full .venv/bin/pytest tests/chaos -s --timeout 2400

openapi: venv ## regenerate api/openapi.json from the API's code
	@.venv/bin/python -m diffleet_api.openapi api/openapi.json

kind-up: ## (needs Docker; untested here) a kind cluster with labelled GPU node pools
	@hack/kind-up.sh

bench-setup: ## measure setup and stack figures into bench/results/setup.md
	@bench/setup.sh

bench-dispatch: ## dispatch throughput and latency vs kube-scheduler (needs make up-infra)
	@eval "$$(hack/stack.sh env)" && .venv/bin/python bench/dispatch.py

bench-worker: up-infra ## worker overhead around the pipeline call, first image per cache tier
	@eval "$$(hack/stack.sh env)" && OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m bench.worker

bench-features: venv ## CPU time per generation feature on the tiny models into bench/results/features.md
	@OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m bench.features

bench-api: ## POST /v1/jobs vs a direct create at 50 clients (needs make up-infra)
	@eval "$$(hack/stack.sh env)" && .venv/bin/python -m bench.api

# The closing note of issue 15: a generated 3,000-job Zipf trace (bench/traces.py defaults)
# on 8 workers of 1 slot, 2 hot slots, 8 s loads, 10x faster than the trace.
bench-replay: ## trace replay through the operator vs its bounds into bench/results/replay.md (needs make up-infra)
	@mkdir -p $(STATE)/bench && .venv/bin/python -m bench.traces --jobs 3000 > $(STATE)/bench/replay-trace.jsonl
	@eval "$$(hack/stack.sh env)" && .venv/bin/python bench/replay.py $(STATE)/bench/replay-trace.jsonl \
		--workers 8 --concurrency 1 --hot-slots 2 --load-seconds 8 --speedup 10 \
		--json bench/results/replay.json --markdown bench/results/replay.md

# KEDA is built here only (never by make setup); SIGINT at the bound lets the benchmark
# stop KEDA and the operator and remove what it made.
bench-autoscale: ## autoscaler vs KEDA 2.21: bursts into a pool at zero (needs make up-infra)
	@hack/build-keda.sh
	@eval "$$(hack/stack.sh env)" && timeout -s INT -k 60 1200 .venv/bin/python -m bench.autoscale

# 1,000 kwok GPU nodes with a simulated worker each (hack/stack.sh up-scale), removed after;
# bounded by timeout, whose SIGINT lets it remove what it made. SCALE_ARGS="--nodes 100"
# for a smaller fleet; SOAK_ARGS="--minutes 20" for a shorter soak.
.PHONY: bench-scale bench-soak
SCALE_ARGS ?=
SOAK_ARGS ?=
bench-scale: ## 1,000 GPU nodes: jobs/s, writes per job, API-server requests/s, operator CPU and RSS into bench/results/scale.md (needs make up-infra)
	@eval "$$(hack/stack.sh env)" && timeout -s INT -k 120 2400 .venv/bin/python -m bench.scale $(SCALE_ARGS)

bench-soak: ## operator memory over 100,000 jobs or 60 minutes, finished jobs deleted by TTL, into bench/results/soak.md (needs make up-infra)
	@eval "$$(hack/stack.sh env)" && timeout -s INT -k 120 4200 .venv/bin/python -m bench.scale --soak $(SOAK_ARGS)

clean: down ## stop the stack and remove its state (the tool cache stays)
	@rm -rf $(STATE)/run $(STATE)/logs $(STATE)/traces $(STATE)/pki $(STATE)/kubeconfig
