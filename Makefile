# mole_lightning — common tasks. `make install test` on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
# the CPU build on machines without a GPU; `make install TORCH=torch` for the default CUDA build
TORCH ?= torch==2.13.0
# every package of the environment in which the full test suite last passed
LOCK ?= requirements/constraints.txt
# a throwaway environment with the newest versions pyproject.toml allows
LATEST_VENV ?= .venv-latest
# pytest workers for `make test` (pytest-xdist, one torch thread each; one per core of CI's 2);
# `--dist loadfile` keeps a file in one worker, so a module fixture (a trained run) runs once
TEST_WORKERS ?= 2

.PHONY: install test test-fast test-latest lock train parse bench table lint format clean

# installs exactly the locked versions, then checks that the environment equals the lock
install:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c $(LOCK) pip setuptools
	$(PY) -m pip install -q -c $(LOCK) "$(TORCH)"
	$(PY) -m pip install -q -c $(LOCK) -e ".[dev,offline,cluster]"
	$(PY) -m mole_lightning.utils.environment $(LOCK)

test:
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile

test-slow:
	$(PY) -m pytest -q -m slow

# the full suite on the newest releases pyproject.toml allows (torch stays $(TORCH)):
# run it before refreshing the lock, and whenever a dependency has a new release
test-latest:
	rm -rf $(LATEST_VENV)
	python3 -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade pip setuptools
	$(LATEST_VENV)/bin/python -m pip install -q "$(TORCH)"
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade -e ".[dev,offline,cluster]"
	-$(LATEST_VENV)/bin/python -m mole_lightning.utils.environment $(LOCK)
	$(LATEST_VENV)/bin/python -m pytest -q -p no:cacheprovider

# rewrites the lock from an environment whose full test suite passed:
# `make lock` (the project venv) or `make lock VENV=.venv-latest` (after `make test-latest`)
lock:
	echo "# Lock of tested versions: written by 'make lock' from an environment in which the full test suite passed." > $(LOCK)
	echo "# Python $$($(PY) -c 'import platform; print(platform.python_version())'); torch's local label (+cpu) is dropped so a CUDA build of the same version matches." >> $(LOCK)
	$(PY) -m pip freeze --all --exclude-editable | sed -e 's/^\(torch==[^+]*\)+.*/\1/' >> $(LOCK)
	$(PY) -m mole_lightning.utils.environment $(LOCK)

# the offline main job: LoRA on RTE with the MiniLM backbone and the local GLUE copy
train:
	$(PY) train.py task=rte method=lora backbone=minilm data.dir=../shared/data/glue_data trainer.max_epochs=1 logger=csv

parse:
	$(PY) scripts/parse.py task=rte parser=spacy data.dir=../shared/data/glue_data

bench:
	$(PY) scripts/bench.py --quick

table:
	$(PY) scripts/collect.py logs/train/multiruns

lint:
	$(PY) -m ruff check mole_lightning scripts tests train.py
	$(PY) -m ruff format --check mole_lightning scripts tests train.py

format:
	$(PY) -m ruff format mole_lightning scripts tests train.py

clean:
	rm -rf logs .cache .pytest_cache .ruff_cache $(LATEST_VENV)
