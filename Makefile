# Every target creates and uses the project's own virtual environment.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all proto install demo test lint typecheck format bench clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "grpcio-tools>=1.62"
	$(BIN)/python scripts/gen_proto.py
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

demo: proto
	$(BIN)/guantong demo

test: proto
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check gateway node tests scripts bench
	$(BIN)/ruff format --check gateway node tests scripts bench

typecheck: proto
	$(BIN)/mypy gateway node

format: $(STAMP)
	$(BIN)/ruff format gateway node tests scripts bench

bench: proto
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) var build *.egg-info
