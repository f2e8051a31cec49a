# The template's own tasks. `make demo` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
# Written once the dev tools are in $(VENV): make installs them again when the lock changes.
INSTALLED := $(VENV)/.installed
BROKER ?= kafka
NAME ?= $(BROKER)_project
OUT ?= build

.DEFAULT_GOAL := help
.PHONY: help demo test bake lint lock clean bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

# The dev tools, each pinned with its hashes in requirements-dev.lock; uv (itself from the lock,
# put in by pip) installs them.
$(INSTALLED): requirements-dev.lock
	@echo "install: the template's dev tools into $(VENV), from requirements-dev.lock"
	@$(PYTHON) -m venv $(VENV)
	@sed -n '/^uv==/,/[^\\]$$/p' requirements-dev.lock > $(VENV)/uv-requirement.txt
	@# -qq: errors only; a pip config's extra index without uv would warn (it is not needed)
	@$(PY) -m pip install -qq --disable-pip-version-check --require-hashes --no-deps -r $(VENV)/uv-requirement.txt
	@$(UV) pip install --quiet --python $(PY) --require-hashes -r requirements-dev.lock
	@touch $(INSTALLED)

demo: $(INSTALLED) ## bake the default project into build/demo, run it without Docker, show one event fan out
	PY=$(PY) bash scripts/demo.sh

# Three workers side by side (pytest-xdist): much of the suite waits on brokers and
# containers; each broker's compose stack keeps to one worker (tests/conftest.py).
test: $(INSTALLED) ## the template's whole test suite: every option baked, linted and run
	$(PY) -m pytest -n 3

bake: $(INSTALLED) ## bake a project: make bake BROKER=kafka|rabbitmq|sqs NAME=my_project [OUT=build]
	$(VENV)/bin/cookiecutter --no-input --overwrite-if-exists . -o $(OUT) broker=$(BROKER) project_slug=$(NAME) project_name=$(NAME)
	@echo "baked $(OUT)/$(NAME); next: cd $(OUT)/$(NAME) && make install local-up demo"

bench: $(INSTALLED) ## bake BROKER's project, run it locally, run its fan-out benchmark: make bench BROKER=kafka|rabbitmq|sqs
	PY=$(PY) BROKER=$(BROKER) BENCH_ARGS="$(BENCH_ARGS)" bash scripts/bench.sh

lint: $(INSTALLED) ## ruff over the template's own code and the generated project's Python, where it stands
	$(PY) -m ruff check --config pyproject.toml .
	$(PY) -m ruff format --check --config pyproject.toml .

lock: $(INSTALLED) ## pin the dev tools (requirements-dev.txt) and each broker's project packages again, with hashes (UPGRADE=1: newest)
	$(UV) pip compile --quiet --universal --python-version 3.11 --generate-hashes --no-header --no-annotate \
		$(if $(UPGRADE),--upgrade) requirements-dev.txt --output-file requirements-dev.lock
	PY=$(PY) UPGRADE=$(UPGRADE) bash scripts/lock.sh

clean: ## remove baked projects and the template's venv
	rm -rf build $(VENV)
