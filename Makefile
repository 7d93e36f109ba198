# The two commands the README opens with:
#   make demo   set up .venv and run the main job on the embedded default (CPU)
#   make test   set up .venv and run the test suite (offline, CPU)
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1

.PHONY: setup test demo
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0   # the CPU build on this machine's disk; never pulls CUDA
	$(PY) -m pip install -q -e '.[test]'
	touch $@

test: setup
	$(PY) -m pytest -q -ra

demo: setup
	$(VENV)/bin/facial-r1 data synth-faces --out runs/tiny/synfacs --n 2200 --seed 0 --reasoning-fraction 0.5 --preview
	$(VENV)/bin/facial-r1 model init-tiny --out runs/tiny/model
	$(VENV)/bin/facial-r1 sft --config configs/sft/tiny-cpu.yaml
	$(VENV)/bin/facial-r1 eval --model runs/tiny/sft --data runs/tiny/synfacs/test.jsonl \
	    --image-folders runs/tiny/synfacs --protocol synfacs --out runs/tiny/eval-sft
