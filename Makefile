# behaviorlm developer commands. Everything installs into .venv; torch comes first as the local
# CPU wheel (torch==2.13.0) so that no dependency can pull a CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench lint clean

$(STAMP): pyproject.toml requirements/llm.txt requirements/dowhy.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,bench,text,serve,causal,graph,llm,spark]'
	$(BIN)/pip install --quiet --no-deps --require-hashes -r requirements/llm.txt
	$(BIN)/pip install --quiet --no-deps --require-hashes -r requirements/dowhy.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m behaviorlm.demo

# pytest exit code 5 means "no tests collected": that is a failure for us, never a pass.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: $(STAMP)
	$(BIN)/python benchmarks/run_baselines.py
	$(BIN)/python benchmarks/ingest_throughput.py
	$(BIN)/python benchmarks/make_tables.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info src/*.egg-info
