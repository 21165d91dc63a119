# `make train`: the embedded synthetic demo; `make test`: the test suite. Both create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: train test bench figures

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

train: $(VENV)/.installed
	$(PY) main.py

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) bench/recall_speed.py
	$(PY) bench/model_costs.py

figures: $(VENV)/.installed
	$(PY) bench/make_figures.py
