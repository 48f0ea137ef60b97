# Two commands set everything up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean browser

$(PY):
	python3 -m venv $(VENV)

# torch is pinned to the local CPU build first, so that no later requirement pulls a CUDA wheel.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[dev,onnx,camera,ray]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bufferanytime demo -o demo_out

# The web app's browser test drives Debian's headless Chromium (never a browser download): installed with apt-get
# when missing (as root, like CI; through sudo otherwise).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium

browser: $(CHROMIUM)

# One test worker per CPU, at most 4 (each holds its own tiny models); a test file's tests run on one worker, so a
# module's fixtures (an ONNX export, trained priors) are built once.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)

test: $(STAMP) $(CHROMIUM)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) demo_out
