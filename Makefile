# The template's own tasks. `make demo` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BROKER ?= kafka
NAME ?= $(BROKER)_project
OUT ?= build

.DEFAULT_GOAL := help
.PHONY: help demo test bake lint clean bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

$(PY): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $(PY)

demo: $(PY) ## bake the default project into build/demo, run it without Docker, show one event fan out
	PY=$(PY) bash scripts/demo.sh

test: $(PY) ## the template's whole test suite: every option baked, linted and run
	$(PY) -m pytest

bake: $(PY) ## bake a project: make bake BROKER=kafka|rabbitmq NAME=my_project [OUT=build]
	$(VENV)/bin/cookiecutter --no-input --overwrite-if-exists . -o $(OUT) broker=$(BROKER) project_slug=$(NAME) project_name=$(NAME)
	@echo "baked $(OUT)/$(NAME); next: cd $(OUT)/$(NAME) && make install local-up demo"

bench: $(PY) ## bake BROKER's project, run it locally, run its fan-out benchmark: make bench BROKER=kafka|rabbitmq
	PY=$(PY) BROKER=$(BROKER) BENCH_ARGS="$(BENCH_ARGS)" bash scripts/bench.sh

lint: $(PY) ## ruff over the template's own code and the generated project's Python, where it stands
	$(PY) -m ruff check --config pyproject.toml .
	$(PY) -m ruff format --check --config pyproject.toml .

clean: ## remove baked projects and the template's venv
	rm -rf build $(VENV)
