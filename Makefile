# The two Quickstart commands: `make demo` records demos in simulation, `make test` runs the test suite.
# Each sets up .venv on first use (scripts/setup.sh), so a fresh clone needs nothing else.

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.telecorder-installed
DEMO_OUT ?= demos/sim-$(shell date +%Y%m%d-%H%M%S)
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: demo test setup lint bench clean vr-runtime

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/collect --device leader_arm --emulate --robot sim --episodes 5 --episode-time 8 --reset-time 0 --seed 0 \
		--task "pick up the red cube and lift it" --out $(DEMO_OUT)
	$(BIN)/telecorder info $(DEMO_OUT)
	$(BIN)/telecorder doctor $(DEMO_OUT)

# Monado, the OpenXR runtime the live VR tests load, built once from ../shared/vendor into
# ~/.cache/telecorder/monado-<sha12>/ (1-3 minutes on 2 cores, once; skipped when the archive is absent).
vr-runtime:
	bash scripts/vr_runtime.sh

test: $(STAMP) vr-runtime
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -rs -m "not tf"
	$(BIN)/python -m pytest -q -rs -m tf

bench: $(STAMP)
	$(BIN)/python benchmarks/record.py
	$(BIN)/python benchmarks/record.py --hogs 2
	$(BIN)/python benchmarks/record.py --beside train
	$(BIN)/python benchmarks/record_policy.py
	$(BIN)/python benchmarks/view_open.py
	$(BIN)/python benchmarks/bus.py
	$(BIN)/python benchmarks/convert.py
	$(BIN)/python benchmarks/sim_cameras.py
	$(BIN)/python benchmarks/fault_campaign.py
	$(BIN)/python benchmarks/fuzz_inputs.py
	$(BIN)/python benchmarks/bc.py
	$(BIN)/python benchmarks/loader.py
	$(BIN)/python benchmarks/replay_drift.py
	$(BIN)/python benchmarks/tasks.py
	$(BIN)/python benchmarks/vla.py --obs state
	$(BIN)/python benchmarks/xembodiment.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
