# make train | make test : set up .venv on first use (Python 3.11), then run.
# TORCH picks the torch build installed first: the default is the CPU build; for CUDA see the README.
PYTHON ?= python3.11
VENV   ?= .venv
TORCH  ?= torch==2.13.0
ARGS   ?=
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.deepbasics-installed

.PHONY: train test test-fast lint setup clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=python3"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/deepbasics-train $(ARGS)

# everything, slow tests included (what CI runs); worksteal: a worker that runs out of tests takes
# some of the other's, so the few long end-to-end tests do not leave one core idle at the end
test: $(STAMP)
	$(BIN)/python -m pytest -n auto --dist worksteal -m "slow or not slow" $(ARGS)

# the default suite: leaves out tests marked slow
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n auto --dist worksteal $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts

clean-venv:
	rm -rf $(VENV)
