# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install mfsr, run the built-in demo into mfsr-demo/
#   make test   - create .venv, install mfsr with test extras, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mfsr-installed

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	# constraints/cpu.txt pins the CPU build of torch for dev and CI
	$(BIN)/python -m pip install --quiet -c constraints/cpu.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mfsr demo -o mfsr-demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_quality.py
	$(BIN)/python benchmarks/bench_speed.py

clean:
	rm -rf mfsr-demo .pytest_cache build *.egg-info
