# temseg: `make demo` and `make test` work from a fresh clone (they create .venv themselves).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.temseg-installed
# torch without an NVIDIA driver: the CPU build (a plain `pip install torch` would pull a
# multi-GB CUDA build). Override TORCH_SPEC / TORCH_PIP_ARGS for another build.
TORCH_SPEC     ?= torch==2.13.0
TORCH_PIP_ARGS ?=
CPP_BUILD      := build/cpp
JOBS           ?= 2

.PHONY: all demo test test-py test-cpp bench lint install clean

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml setup.py CMakeLists.txt $(shell find csrc -type f 2>/dev/null)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		echo "NVIDIA driver found: installing torch from the default index"; \
	else \
		echo "no NVIDIA driver: installing the CPU build of torch ($(TORCH_SPEC))"; \
		$(BIN)/pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"; \
	fi
	$(BIN)/pip install -q setuptools wheel "pybind11>=2.12" "cmake>=3.22" ninja
	$(BIN)/pip install -q --no-build-isolation -e '.[test]'
	# type stubs for mypy on temseg/export/tensorrt.py; --no-deps: they require tensorrt,
	# whose wheels come from NVIDIA's own index (not reachable everywhere)
	$(BIN)/pip install -q --no-deps "tensorrt-stubs>=10,<11"
	@touch $@

install: $(STAMP)

# doctest (the C++ test framework) comes from Debian when it is missing.
/usr/include/doctest/doctest.h:
	@echo "installing doctest-dev (C++ test framework) with apt-get"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq doctest-dev

test-cpp: $(STAMP) /usr/include/doctest/doctest.h
	$(BIN)/cmake -S . -B $(CPP_BUILD) -G Ninja -DCMAKE_MAKE_PROGRAM=$(abspath $(BIN))/ninja \
		-DCMAKE_BUILD_TYPE=Release -DTEMSEG_BUILD_TESTS=ON -DTEMSEG_BUILD_PYTHON=OFF \
		-DTEMSEG_WITH_TORCH=ON \
		-DCMAKE_PREFIX_PATH="$$($(BIN)/python -c 'import torch;print(torch.utils.cmake_prefix_path)')"
	$(BIN)/cmake --build $(CPP_BUILD) -j$(JOBS)
	$(BIN)/ctest --test-dir $(CPP_BUILD) --output-on-failure

lint: $(STAMP)
	$(BIN)/ruff check .

test-py: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint test-cpp test-py

demo: $(STAMP)
	$(BIN)/temseg demo

# Benchmark suites against the baseline (docs/benchmarks.md): pytest-benchmark JSON in
# $(BENCH_JSON), then one summary table. Sizes: TEMSEG_BENCH_* variables (see the docs).
BENCH_JSON ?= build/bench.json
BENCH_ARGS ?=
SLIDE_MEMORY_SIZES ?= 4096 2048
bench: $(STAMP)
	@mkdir -p build
	$(BIN)/python -m pytest benchmarks -q --benchmark-quiet --benchmark-json=$(BENCH_JSON) \
		$(BENCH_ARGS)
	@if [ -f benchmarks/slide_memory.py ]; then \
		$(BIN)/python benchmarks/slide_memory.py --sizes $(SLIDE_MEMORY_SIZES) \
			--workdir build/slide-memory --out build/slide_memory.json \
			|| echo "benchmarks/slide_memory.py failed: left out of the summary"; fi
	$(BIN)/python -m benchmarks.summary $(BENCH_JSON) --slide-memory build/slide_memory.json

clean:
	rm -rf build temseg-demo temseg/*.so *.egg-info

# GPU check (docs/gpu.md): kernels, CUDA training step and whole-slide inference on one GPU,
# < 8 minutes; JSON in $(GPU_CHECK_OUT). No install step: on the GPU machine (no registry)
# python3 is used as it is, after the editable build docs/gpu.md gives.
GPU_CHECK_OUT  ?= build/gpu_check.json
GPU_CHECK_ARGS ?=
GPU_PYTHON     ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
.PHONY: gpu-check
gpu-check:
	@mkdir -p $(dir $(GPU_CHECK_OUT))
	PYTHONUNBUFFERED=1 $(GPU_PYTHON) benchmarks/gpu_check.py --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)
