# Every target installs what it needs into .venv first; `make .venv` builds it alone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO := proto/swingup/v1/policy.proto

.PHONY: .venv demo test lint typecheck unit bench model proto clean help

help:
	@echo "make demo   serve the shipped model and drive pendulums through it"
	@echo "make test   lint, typecheck and run every test (make lint, make typecheck, make unit alone)"
	@echo "make bench  run the benchmarks and write docs/benchmarks.md"
	@echo "make model  retrain and export the shipped default model"
	@echo "make proto  regenerate swingup/v1 from proto/"
	@echo "make .venv  only install into .venv (every target does it first)"

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

.venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m client.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[bench]'
	$(BIN)/python -m bench

model: $(STAMP)
	$(BIN)/python -m trainer.make_model

proto: $(STAMP)
	$(BIN)/python -m swingup.protogen

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
