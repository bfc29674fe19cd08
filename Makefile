# Two commands: `make run` (pipeline on the built-in example) and `make test`; `make lint` checks style and types.
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# the stages run `python -m stages.<name>`: the venv's python must come first on PATH
export PATH := $(BIN):$(PATH)

.PHONY: install run test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# requirements.txt's lines marked --no-deps go in without their dependencies (each says why)
	grep -v -E '^[^#].*--no-deps' requirements.txt > $(VENV)/requirements-with-deps.txt
	$(BIN)/python -m pip install -q -r $(VENV)/requirements-with-deps.txt -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps $$(grep -E '^[^#].*--no-deps' requirements.txt | cut -d' ' -f1)
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

run: install
	dvc repro
	cnn-factory summary   # the headline figures with their intervals; every figure: eval/figures.json

test: install
	$(BIN)/python -m pytest -q -n auto   # one worker per core (pytest-xdist)

lint: install
	$(BIN)/ruff check src stages tests benchmarks
	$(BIN)/ruff format --check src stages tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) data/prepared data/cache data/example models checkpoints dvclive eval
