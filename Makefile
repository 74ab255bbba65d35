# ftpipe: `make run` runs the main job on the embedded default; `make test` runs the suite.
# Both install everything into .venv first, so they work on a fresh clone (quietly: pip says
# only what went wrong).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch goes in first, on its own, so nothing pulls a multi-GB CUDA build by accident.
# GPU users: make install TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
PIP_VERSION ?= 26.3
CONFIG ?= configs/demo.yaml

# Everything runs offline: the default model ships inside a package.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: install run sft-demo bench-sft compile test test-all lint format lock clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq pip==$(PIP_VERSION)
	$(BIN)/python -m pip install -qq $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/python -m pip install -qq --constraint constraints.txt --editable ".[dev]"
	touch $@

# The whole DAG (prep → recommend → tune → train → evaluate → register → promote) through
# the KFP local runner, with local Ray and MLflow on sqlite.
run: install
	$(BIN)/ftpipe run --config $(CONFIG)

# Instruction tuning end to end: the demo's tiny Llama is built from a config first.
sft-demo: install
	$(BIN)/python examples/sft_demo/build_model.py
	$(BIN)/ftpipe run --config configs/sft-demo.yaml

# Instruction tuning's tokens/s, packed and not, beside TRL's SFTTrainer (the bench extra):
# rewrites its section of docs/benchmarks.md.
bench-sft: install
	$(BIN)/python -m pip install --constraint constraints.txt --editable ".[dev,bench]"
	$(BIN)/python bench/sft.py --trl

# The pipeline's IR YAML for a Kubeflow cluster: generated, never edited by hand.
compile: install
	$(BIN)/ftpipe compile --config $(CONFIG) --output build/finetune.yaml

# The run report's browser test (tests/pipelines/test_report_browser.py) drives the system's
# Chromium, Debian's `chromium` package, installed here when missing (as root, or through sudo
# without a password). A failed install stops make: a green run must not hide a skipped test.
.PHONY: chromium
chromium:
	@command -v chromium >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo -n); \
	  { $$SUDO apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }; } || \
	  { echo "make: could not install Chromium (apt-get install chromium) for the browser test;" \
	    "install it, or run the tests without it: .venv/bin/pytest -m 'not gpu and not slow'" >&2; \
	    exit 1; }; }

# Tests marked slow (20 s or more each on 2 cores: Ray Tune sweeps, a killed Ray worker) run
# in test-all, so make test stays under 20 minutes.
test: install chromium
	$(BIN)/pytest -p randomly -m "not gpu and not slow"

test-all: install
	$(BIN)/pytest -p randomly -m "not gpu"

# ruff, then the import contracts in pyproject.toml ([tool.importlinter]), with no cache dir.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Re-pin after changing dependencies in pyproject.toml.
lock: install
	{ echo "# Pinned versions that \`make install\` installs (pip -c). Regenerate with \`make lock\`."; \
	  echo "# torch is pinned by TORCH in the Makefile and installed first (CPU or CUDA build)."; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -viE '^(torch|ftpipe)=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# --- Kubernetes: images and deployment (infra/, docs/deploy.md) ---
# make images REGISTRY=registry.example.com/ml; make deploy OVERLAY=prod REGISTRY=...
REGISTRY ?=
OVERLAY ?= dev
DOCKER ?= docker
# Images are tagged with the commit they are built from; deploy uses the same tag.
IMAGE_TAG ?= $(shell git rev-parse --short=12 HEAD)
IMAGES := ftpipe:cpu ftpipe-cuda:cuda ftpipe-mlflow:mlflow
# What goes into the images: the tag names the commit only if these are committed.
IMAGE_INPUTS := src components pipelines configs examples pyproject.toml constraints.txt README.md infra/docker

.PHONY: images push-images render deploy undeploy

images:
	@test -n "$(REGISTRY)" || { echo "set REGISTRY, e.g. make images REGISTRY=registry.example.com/ml" >&2; exit 2; }
	@test -z "$$(git status --porcelain -- $(IMAGE_INPUTS))" || { echo "uncommitted changes in $(IMAGE_INPUTS): commit first, the image tag is the commit" >&2; exit 2; }
	@for pair in $(IMAGES); do \
	  name=$${pair%%:*}; file=$${pair##*:}; \
	  DOCKER_BUILDKIT=1 $(DOCKER) build -f infra/docker/$$file.Dockerfile \
	    --build-arg GIT_SHA=$$(git rev-parse HEAD) -t $(REGISTRY)/$$name:$(IMAGE_TAG) . || exit 1; \
	done

push-images: images
	@for pair in $(IMAGES); do $(DOCKER) push $(REGISTRY)/$${pair%%:*}:$(IMAGE_TAG) || exit 1; done

# Print what deploy would apply.
render:
	@test -n "$(REGISTRY)" || { echo "set REGISTRY (the one make images pushed to)" >&2; exit 2; }
	@dir=$$(infra/render.sh $(OVERLAY) $(REGISTRY) $(IMAGE_TAG)) && kubectl kustomize "$$dir"

deploy:
	@test -n "$(REGISTRY)" || { echo "set REGISTRY (the one make images pushed to)" >&2; exit 2; }
	dir=$$(infra/render.sh $(OVERLAY) $(REGISTRY) $(IMAGE_TAG)) && kubectl apply -k "$$dir"

# Deletes the namespaces ray and mlflow with their Secrets and MLflow's database: see docs/deploy.md.
undeploy:
	kubectl delete -k infra/overlays/$(OVERLAY) --ignore-not-found

clean:
	rm -rf $(VENV) outputs build .pytest_cache .ruff_cache
