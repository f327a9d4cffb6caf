# make train | make test : set up .venv on first use, then run.
# The interpreter: PYTHON=<command> if given, else the newest Python of the supported range (pyproject's
# requires-python: 3.10 to 3.13) among python3.13 ... python3.10 and python3; make says which it took.
# TORCH picks the torch build installed first: the default is the CPU build; for CUDA see the README.
# --no-compile: byte-compiling every installed module took 60 of set-up's 100 s; Python compiles the few
# it imports on first use, into the venv's caches (which PYTHONDONTWRITEBYTECODE=1, set on some machines,
# would forbid: then every process, each test's too, would compile torch again).
export PYTHONDONTWRITEBYTECODE =
SUPPORTED := 3.13 3.12 3.11 3.10
PYTHON ?=
VENV   ?= .venv
TORCH  ?= torch==2.13.0
ARGS   ?=
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.deepbasics-installed

.PHONY: train test test-fast lint setup clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || { \
	  for py in $(or $(PYTHON),$(addprefix python,$(SUPPORTED)) python3); do \
	    $$py -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null && break; py=; \
	  done; \
	  test -n "$$py" || { echo "error: $(if $(PYTHON),PYTHON=$(PYTHON) is not a Python 3.10 to 3.13 that runs here,no Python 3.10 to 3.13 found (tried python3.13 ... python3.10 and python3)); install one (python.org, or your system's python3 package) or run make PYTHON=<its command>"; exit 2; }; \
	  echo "setting up $(VENV) with $$py ($$($$py -c 'import sys; print(sys.version.split()[0])'))"; \
	  $$py -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile $(TORCH)
	$(BIN)/python -m pip install --quiet --no-compile -e '.[dev]'
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
