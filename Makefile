# torch-distx: `make demo` and `make test` work on a fresh Debian 12 machine.
# They install what is missing (Debian packages, a virtual env at .venv/ with
# torch and the extension) and skip what is already done.

SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
APT_PACKAGES := libucx-dev ucx-utils libgtest-dev cmake g++ pkg-config
PY_PACKAGES := torch==$(TORCH_VERSION) numpy pytest pytest-timeout scikit-learn ninja expecttest hypothesis
BUILD_STAMP := build/.installed
CPP_BUILD := build/cpp
SOURCES := $(shell find csrc torch_distx -type f \( -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.hpp' -o -name '*.cuh' -o -name '*.py' \) ! -name '_build_info.py') setup.py pyproject.toml
NPROC ?= 2

.PHONY: all deps venv clients build demo test check-layering test-cpp test-py test-generic test-multihost test-long test-asan test-tsan check-cuda-build test-gpu bench bench-multihost bench-reduce bench-ps format clean

# A short selection of PyTorch's generic distributed suite for `make test` (the
# tests in it that the suite gates to gloo by name also run in alias mode, see
# tests/generic/compare.py); `make test-long` runs all of it on both backends (~25 min on 2 cores)
# plus the long loops.
GENERIC_K ?= test_all_reduce_sum or test_all_reduce_max or test_broadcast or test_all_gather or test_barrier or test_DistributedDataParallel_requires_grad or test_sparse_all_reduce_sum or test_monitored_barrier_gloo or test_batch_isend_irecv_gloo or test_all_reduce_coalesced_sum or test_send_recv_any_source

all: build

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.ready:
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(PY_PACKAGES)
	touch $@

venv: $(VENV)/.ready

$(BUILD_STAMP): $(VENV)/.ready $(SOURCES)
	@$(MAKE) --no-print-directory deps
	@# _C is compiled in place, incrementally (objects kept in build/ext-temp);
	@# the package is then installed editable without compiling it again.
	flock build.lock env MAX_JOBS=$(NPROC) $(VPY) setup.py -q build_ext --inplace --build-temp build/ext-temp
	$(VPY) -m pip show -q torch-distx >/dev/null 2>&1 || \
	  DISTX_SKIP_EXT=1 $(VPY) -m pip install -q --no-build-isolation --no-deps -e .
	@mkdir -p build && touch $@

build: deps venv $(BUILD_STAMP)

demo: build
	$(VPY) -m torch.distributed.run --standalone --nproc-per-node=2 examples/ddp_train.py

$(CPP_BUILD)/build.ninja: tests/cpp/CMakeLists.txt
	cmake -S tests/cpp -B $(CPP_BUILD) -G Ninja -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV)/bin/ninja) >/dev/null

test-cpp: deps venv $(CPP_BUILD)/build.ninja
	flock build.lock cmake --build $(CPP_BUILD) -j $(NPROC)
	$(CPP_BUILD)/distx_tests --gtest_brief=1
	$(CPP_BUILD)/distx_ucx_tests --gtest_brief=1

# Client libraries that tests/python/test_clients.py runs distx under
# (Lightning, Accelerate). pip may not touch torch (constraint); when they
# cannot be installed the tests skip and say why.
CLIENT_PACKAGES := lightning accelerate
$(VENV)/.clients: $(VENV)/.ready
	@echo "torch==$(TORCH_VERSION)" > $(VENV)/torch-pin.txt
	$(VPY) -m pip install -q $(CLIENT_PACKAGES) -c $(VENV)/torch-pin.txt \
	  || echo "clients: could not install $(CLIENT_PACKAGES); tests/python/test_clients.py will skip"
	touch $@

clients: $(VENV)/.clients

test-py: build clients
	$(VPY) -m pytest tests/python -q

test-generic: build
	$(VPY) tests/generic/compare.py -k "$(GENERIC_K)" --gloo-json tests/generic/gloo_baseline.json

# distx across simulated hosts: network namespaces with throttled links
# (tests/multihost/testbed.py). Needs root and ip/tc/unshare; skipped otherwise.
test-multihost: build
	$(VPY) -m pytest tests/multihost -q

# The include layering of csrc/ (docs/design.md, "Layers"): no upward include,
# torch/UCX/CUDA headers only where they belong.
check-layering:
	$(PY) tests/check_layering.py

test: check-layering test-cpp test-py test-generic test-multihost check-cuda-build

# Compiles the whole extension, CUDA sources included, against the CUDA build
# of torch 2.14.1 with nvcc, so the GPU path and newer torch headers cannot rot
# unseen on CPU-only CI. Nothing built here runs here (no GPU).
CUDA_VENV := .venv-cuda
CUDA_HOME ?= /usr/local/cuda
$(CUDA_VENV)/.ready:
	$(PY) -m venv $(CUDA_VENV)
	$(CUDA_VENV)/bin/pip install -q torch==2.14.1 numpy ninja setuptools
	touch $@

check-cuda-build: deps $(CUDA_VENV)/.ready
	@if [ ! -x $(CUDA_HOME)/bin/nvcc ]; then echo "check-cuda-build: no nvcc at $(CUDA_HOME); skipped"; exit 0; fi
	flock build.lock env CUDA_HOME=$(CUDA_HOME) PATH=$(CUDA_HOME)/bin:$$PATH MAX_JOBS=$(NPROC) DISTX_WRITE_BUILD_INFO=0 TORCH_CUDA_ARCH_LIST="9.0" \
	  $(CUDA_VENV)/bin/python setup.py -q build_ext --build-temp build/cuda-temp --build-lib build/cuda-lib \
	  > build/cuda-build.log 2>&1 || { tail -40 build/cuda-build.log; exit 1; }
	@ls build/cuda-lib/torch_distx/_C*.so && echo "check-cuda-build: compiled against torch 2.14.1 + CUDA with nvcc"

# tests/gpu: CUDA tensors through NCCL and the 2-host UCX stage. Needs a GPU
# and a CUDA build of torch_distx; elsewhere every test is reported as skipped
# with the reason. On a GPU machine whose python already holds a CUDA torch,
# build in place and point GPU_PY at it (tests/gpu/run_on_device.sh does):
#   make test-gpu GPU_PY=python3
GPU_PY ?= $(VPY)
test-gpu: $(if $(filter $(VPY),$(GPU_PY)),build)
	$(GPU_PY) -m pytest tests/gpu -q -rs -p no:cacheprovider

test-long: test-asan build
	DISTX_KILL_TRIALS=20 $(VPY) -m pytest tests/python/test_failures.py -q
	DISTX_TEST_LONG=1 $(VPY) -m pytest tests/python -q -m long
	DISTX_TEST_LONG=1 $(VPY) -m pytest -q -s tests/python/test_torchrun.py tests/python/test_groups_footprint.py -k "restart or subgroups"
	$(VPY) tests/generic/compare.py --json build/generic-suite.json

# The C++ suite under AddressSanitizer + LeakSanitizer + UBSan.
test-asan: deps venv
	cmake -S tests/cpp -B build/cpp-asan -G Ninja -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV)/bin/ninja) -DDISTX_SANITIZE=ON >/dev/null
	flock build.lock cmake --build build/cpp-asan -j $(NPROC)
	ASAN_OPTIONS=detect_leaks=1 build/cpp-asan/distx_tests --gtest_brief=1

# The C++ suite under ThreadSanitizer (ranks as threads: the algorithms over
# the local transport, the liveness ring, the completion pool), then a smoke
# run of the backend from Python: 2 ranks, each with _C built with TSan
# (DISTX_TSAN=1, into build/tsan-lib; ~10 min on one core the first time,
# incremental after) and libtsan preloaded,
# fail on any TSan report (tests/tsan/smoke.py, ~20 s; suppressions, each
# with its reason, in tests/tsan/suppressions.txt).
TSAN_LIB := build/tsan-lib
test-tsan: deps venv
	cmake -S tests/cpp -B build/cpp-tsan -G Ninja -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV)/bin/ninja) -DDISTX_TSAN=ON >/dev/null
	flock build.lock cmake --build build/cpp-tsan -j $(NPROC)
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" build/cpp-tsan/distx_tests --gtest_brief=1
	@mkdir -p build && find $(TSAN_LIB) -name '*.py' -delete 2>/dev/null || true
	flock build.lock env MAX_JOBS=$(NPROC) DISTX_TSAN=1 $(VPY) setup.py -q build --build-lib $(TSAN_LIB) --build-temp build/tsan-temp \
	  > build/tsan-build.log 2>&1 || { tail -40 build/tsan-build.log; exit 1; }
	$(VPY) tests/tsan/smoke.py --lib $(TSAN_LIB)


# distx vs gloo all-reduce on this host, 2 and 4 ranks, both modes (~5 min).
bench: build
	@$(VPY) -c "import matplotlib" 2>/dev/null || $(VPY) -m pip install -q matplotlib
	$(VPY) benchmarks/allreduce.py --nproc 2,4 --json build/allreduce.json --plot build/allreduce.png

# Hierarchical vs flat ring vs gloo across simulated hosts (root; ~10 min).
bench-multihost: build
	@$(VPY) -c "import matplotlib" 2>/dev/null || $(VPY) -m pip install -q matplotlib
	$(VPY) benchmarks/allreduce_multihost.py --json build/allreduce_multihost.json --plot build/allreduce_multihost.png

bench-reduce: deps venv $(CPP_BUILD)/build.ninja
	flock build.lock cmake --build $(CPP_BUILD) -j $(NPROC) --target distx_bench_reduce
	$(CPP_BUILD)/distx_bench_reduce

# Parameter server vs synchronous DDP with stragglers (docs/ps.md).
bench-ps: build
	@$(VPY) -c "import matplotlib" 2>/dev/null || $(VPY) -m pip install -q matplotlib
	$(VPY) benchmarks/ps_straggler.py --json build/ps_straggler.json --plot docs/ps_straggler.png

format:
	clang-format -i $$(find csrc tests/cpp -name '*.cpp' -o -name '*.h' -o -name '*.hpp' -o -name '*.cu')

clean:
	rm -rf build dist *.egg-info torch_distx/_C*.so torch_distx/_build_info.py
