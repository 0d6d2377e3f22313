# Developer entry points. Each target sets up what it needs first (scripts/setup.sh is idempotent).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export ROS_LOG_DIR ?= $(CURDIR)/build/ros_log
export AMENT_PREFIX_PATH := $(CURDIR)/$(VENV)$(if $(AMENT_PREFIX_PATH),:$(AMENT_PREFIX_PATH))

.PHONY: setup demo test lint bench clean

setup:
	@bash scripts/setup.sh

## The main job: a live EMG -> joint angle demo on the simulated amplifier (~1 min; trains a model first if needed).
demo: setup
	$(VENV)/bin/emg-rcnn-ros demo

## Lint and the whole test suite, on PYTEST_JOBS pytest-xdist workers (most tests wait on processes).
PYTEST_JOBS ?= 2
test: setup lint
	$(PY) -m pytest -q -n $(PYTEST_JOBS) --dist worksteal $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) bench/speed.py
	$(PY) bench/accuracy.py

clean:
	rm -rf build runs models
