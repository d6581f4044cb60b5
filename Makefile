# Quick start: `make demo` (set up + main job), `make test` (set up + tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export OPENBLAS_NUM_THREADS ?= 1
export PYTHONUNBUFFERED := 1
# Share compiled XLA programs between test workers, CLI subprocesses and later runs: XLA
# compilation dominates short runs on CPU.
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.cache/jax
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0.5

.PHONY: setup test test-all demo lint format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

# `make test` leaves out the tests marked slow (kill-and-resume lives, signals sent to the real
# command, a disk filling up mid-run, CNN students, long runs: several more minutes on 2 cores);
# `make test-all` runs them too.
# The gate's Monte-Carlo simulations run their programs far longer than they compile them, so
# they run apart, with XLA's backend optimizations on (tests/conftest.py turns them off for the
# rest, which compile-bound tests dominate), spread test by test over the workers.
GATE_SIMS := tests/adapt/test_gate.py
PYTEST := $(PY) -m pytest -q -x -n 2 --durations=30
SIMS := XLA_FLAGS=--xla_backend_optimization_level=2 $(PYTEST) --dist load

test: $(STAMP)
	$(PY) -m ruff check .
	$(PYTEST) --dist loadfile -m "not slow" --ignore=$(GATE_SIMS)
	$(SIMS) -m "not slow" $(GATE_SIMS)

test-all: $(STAMP)
	$(PY) -m ruff check .
	$(PYTEST) --dist loadfile --ignore=$(GATE_SIMS)
	$(SIMS) $(GATE_SIMS)

# Distill a teacher into an 8-unit student on digits; EV3 (30 s) vs KD and OpenES, each given
# EV3's wall time. About 3 minutes on 2 cores, teacher included.
demo: $(STAMP)
	$(VENV)/bin/ev3evo distill --data digits --student mlp:8 --time-budget 30 --steps 1000 \
		--baselines --out runs/demo

# The BBOB quick mode on COCO (cocoex problems and observers, cocopp's ECDFs): ev3evo.minimize
# against pycma (IPOP, BIPOP, lq-CMA-ES), evosax and nevergrad on the 24 noiseless functions,
# D = 2, 5, 10, one instance, 1000·D evaluations (about 15-25 minutes on 2 cores); results in
# benchmarks/results/ (bbob_quick.md/.json, bbob_quick_ecdf/), COCO data in runs/bbob/.
bench: $(STAMP)
	$(PY) benchmarks/bbob.py --quick --out benchmarks/results

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
