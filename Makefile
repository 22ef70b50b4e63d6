# The two commands of the README work on a fresh machine (Python 3.11 + pip only):
#   make demo   installs, measures label fidelity, runs a real small sweep on the offline dataset (~4 min on 2
#               cores), prints the report's summary (the sweep does, at its end)
#   make test   installs (with the [cluster] extra: the job tests start a `ray start --head`), lints, runs the
#               test suite
# On a GPU node:
#   make gpu-check  the GPU acceptance run (gpu tests, saliency and mixing-overhead benchmarks, trial packing;
#                   < 8 min on one H100/H200): one table, written as JSON to $(RUNS)/gpu_check.json. Without CUDA
#                   it says so, checks that the script runs (tiny CPU sizes, ~30 s) and exits 0
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUNS   ?= $(CURDIR)/mixsweep_runs

.PHONY: install test demo bench gpu-check ui clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --progress-bar off -e ".[dev,cluster]"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

demo: install
	$(VENV)/bin/mixsweep preview --schemes --out $(RUNS)/preview.png
	$(VENV)/bin/mixsweep fidelity --presets mixup,cutmix,saliencymix --pairs 2048 --png $(RUNS)/fidelity.png
	$(VENV)/bin/mixsweep run smoke --storage $(RUNS)

bench: install
	$(PY) bench/saliency.py
	$(PY) bench/train_step.py
	$(PY) bench/pairing.py

gpu-check: install
	$(PY) bench/gpu_check.py --out $(RUNS)/gpu_check.json

ui: install
	$(VENV)/bin/mixsweep ui smoke --storage $(RUNS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
