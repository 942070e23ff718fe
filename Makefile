# Featherweight: `make run` starts the dashboard, `make test` runs every test, `make bench` checks the targets.
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501
STAMP := $(VENV)/.featherweight-installed

.PHONY: setup run demo gallery test test-fast bench bench-scale samples chromium clean

setup: $(STAMP)

# torch is installed first, pinned, so pip takes the CPU wheel and never a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,text,ray,lm,vision,openvino,edge,export]'
	touch $(STAMP)

# Loopback by default; a workshop sets ADDRESS (and the rest of README's "Workshop mode").
ADDRESS ?= 127.0.0.1
run: setup
	@echo "Featherweight dashboard: http://localhost:$(PORT) (serving $(ADDRESS))"
	$(PY) -m streamlit run app.py --server.address $(ADDRESS) --server.port $(PORT)

# The reference gallery: every sample's presets (or SAMPLES="digits-cnn shapes-cnn"), run once into the store that
# `make run` serves; a rerun keeps what is already built. `make demo` builds it, then serves the dashboard.
SAMPLES ?=
gallery: setup
	$(PY) -m core gallery $(if $(SAMPLES),--samples $(SAMPLES))

demo: gallery run

chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: setup chromium
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not e2e"

bench: setup
	$(PY) -m benchmarks.harness

bench-scale: setup
	$(PY) -m benchmarks.scale_out

samples: setup
	$(PY) -m sample_models.train

clean:
	rm -rf $(VENV) .featherweight .pytest_cache
