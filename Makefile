# pinpool - node-local pinned memory pool daemon.
#
#   make            build build/pinpool and build/libpinpool.so (installs deps if missing)
#   make serve      run the daemon with the embedded defaults
#   make test       build and run every test (Criterion, then pytest: test-python)
#   make test-gpu   the GPU tests (they say so and pass where there is no GPU;
#                   tests/gpu/run-multi: the multi-GPU ones, with >= 2 GPUs)
#   make dist       a relocatable tree in build/dist for GPU machines
#   make bench      run the benchmarks (make load: the 64-process load test)
#   make fuzz       build the libFuzzer targets, run each FUZZ_SECONDS (60)
#   make soak       the crash test with SOAK_CYCLES (10000) killed clients
#   make valgrind   a daemon run under valgrind (errors and leaks fail it)
#   make install    PREFIX=/usr/local DESTDIR=: binary, library, headers,
#                   pinpool.pc and the systemd unit
#   make clean
#
# Options: SANITIZE=address|undefined|thread, WERROR=1 (CI), DEBUG=1 (-O0),
#          V=1 (show commands), ARGS="..." (extra flags for `make serve`).

BUILD    ?= build
CC       ?= cc
PKG      ?= pkg-config
PROTOC_C ?= protoc-c
SANITIZE ?=
WERROR   ?=
DEBUG    ?=

# Debian packages the build and the tests need (README says why each).
DEB_PACKAGES := libgrpc-dev protobuf-c-compiler libprotobuf-c-dev libev-dev \
                libcriterion-dev libbsd-dev libxxhash-dev libmicrohttpd-dev pkg-config libibverbs1 \
                libmsgpack-dev libssl-dev
# PyPI packages the Python tests and benchmark need (test-python installs them).
PY_PACKAGES := grpcio grpcio-tools numpy pytest pytest-timeout msgpack msgspec
PYTHON ?= python3
# The Mooncake spill tier (server/tier_mooncake.c) drives Mooncake's PyPI wheel
# through server/mooncake_adapter.py; the tests start a real Mooncake from it.
MOONCAKE_PIP := mooncake-transfer-engine-non-cuda

ifeq ($(V),1)
Q :=
else
Q := @
endif
comma := ,

WARN := -Wall -Wextra -Wstrict-prototypes -Wmissing-prototypes -Wshadow -Wformat=2
ifeq ($(WERROR),1)
WARN += -Werror
endif
OPT := $(if $(DEBUG),-O0,-O2)
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -g $(OPT) $(WARN) -fPIC -pthread -MMD -MP \
               -Iclient -Ipool -Iipc -Iproto -Iserver -I$(BUILD)/gen
ifneq ($(SANITIZE),)
CFLAGS_BASE += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
LDFLAGS_SAN := -fsanitize=$(SANITIZE)
SAN_RT := $(patsubst address,asan,$(patsubst undefined,ubsan,$(patsubst thread,tsan,$(SANITIZE))))
PY_SAN_ENV := LD_PRELOAD=$(shell $(CC) -print-file-name=lib$(SAN_RT).so) ASAN_OPTIONS=detect_leaks=0
endif

# The CUDA backends need only the toolkit's headers: the driver is loaded at run
# time (ipc/cudaload.c), so nothing links libcuda and a CPU-only run never needs it.
CUDA_HOME ?= /usr/local/cuda
ifneq ($(wildcard $(CUDA_HOME)/include/cuda.h),)
CFLAGS_BASE += -DPINPOOL_HAVE_CUDA -isystem $(CUDA_HOME)/include
# NCCL likewise: its header only; libnccl.so.2 is loaded at run time (ipc/ncclload.c).
ifneq ($(wildcard $(CUDA_HOME)/include/nccl.h),)
CFLAGS_BASE += -DPINPOOL_HAVE_NCCL
endif
endif
ifneq ($(filter undefined,$(subst $(comma), ,$(SANITIZE))),)
# UBSan reports must fail the run, not scroll past.
CFLAGS_BASE += -fno-sanitize-recover=undefined
LDFLAGS_SAN += -fno-sanitize-recover=undefined
endif

# pkg-config is only asked once the deps are there (see `deps`).
GRPC_CFLAGS = $(shell $(PKG) --cflags grpc libprotobuf-c libmicrohttpd 2>/dev/null)
GRPC_LIBS   = $(shell $(PKG) --libs grpc libprotobuf-c 2>/dev/null)
MHD_LIBS    = $(shell $(PKG) --libs libmicrohttpd 2>/dev/null)
LIBS        = $(GRPC_LIBS) -lev -ldl -lpthread $(LDFLAGS_SAN)
SRV_LIBS    = $(LIBS) $(MHD_LIBS) -lxxhash -lmsgpackc -lcrypto
CRIT_LIBS   = $(shell $(PKG) --libs criterion 2>/dev/null)

CFLAGS  = $(CFLAGS_BASE) $(GRPC_CFLAGS) $(EXTRA_CFLAGS)
# Layers point down only: pool/ and ipc/ are compiled without the include
# paths of the layers above them, so that an include of one does not build.
ABOVE_pool := -Iclient -Iipc -Iproto -Iserver -I$(BUILD)/gen
ABOVE_ipc  := -Iclient -Iproto -Iserver -I$(BUILD)/gen
layer = $(filter-out $(ABOVE_$(firstword $(subst /, ,$<))),$(1))

GEN_SRC := $(BUILD)/gen/pinpool.pb-c.c
# libpinpool's public headers: pinpool.h includes the error list from pool/.
PUBLIC_HEADERS := client/pinpool.h pool/pinpool_errors.h
POOL_SRC := $(wildcard pool/*.c)
IPC_SRC  := $(wildcard ipc/*.c)
# The gRPC contract's C side (proto/status.c: errors <-> statuses), for both ends.
PROTO_SRC := $(wildcard proto/*.c)
SRV_SRC  := $(filter-out server/main.c,$(wildcard server/*.c))
CLI_SRC  := $(wildcard client/*.c)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_HELPERS := $(filter-out $(TEST_SRC),$(wildcard tests/*.c))
BENCH_SRC := $(wildcard bench/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(notdir $(1)))
# Objects for the shipped binaries, and a second set built with POOL_DEBUG
# (allocator invariants checked after every operation) for the tests.
COMMON_SRC := $(POOL_SRC) $(IPC_SRC) $(PROTO_SRC) $(GEN_SRC)
LIB_OBJ    := $(addprefix $(BUILD)/obj/,$(addsuffix .o,$(basename $(COMMON_SRC) $(CLI_SRC))))
SRV_OBJ    := $(addprefix $(BUILD)/obj/,$(addsuffix .o,$(basename $(COMMON_SRC) $(SRV_SRC) $(CLI_SRC))))
MAIN_OBJ   := $(BUILD)/obj/server/main.o
TOBJ       := $(addprefix $(BUILD)/tobj/,$(addsuffix .o,$(basename $(COMMON_SRC) $(SRV_SRC) $(CLI_SRC) $(TEST_HELPERS))))
TEST_BIN   := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
BENCH_BIN  := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

.PHONY: test-cluster test-tsan all deps serve test test-python test-gpu py-deps python-lib bench dist clean fuzz soak load valgrind install
.SECONDARY:
.DEFAULT_GOAL := all

all: $(BUILD)/.deps-ok
	$(Q)$(MAKE) --no-print-directory $(BUILD)/pinpool $(BUILD)/libpinpool.so

# $(call apt_missing,PACKAGES): install those that are not installed.
define apt_missing
missing=""; for p in $(1); do \
  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
done; \
if [ -n "$$missing" ]; then \
  echo "pinpool: installing Debian packages:$$missing"; \
  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing || exit 1; \
fi
endef

# Installs what is missing with apt-get (as root, or through sudo).
deps: $(BUILD)/.deps-ok
$(BUILD)/.deps-ok: Makefile
	$(Q)$(call apt_missing,$(DEB_PACKAGES))
	$(Q)mkdir -p $(BUILD) && touch $@

# pip install only when the wheel does not import yet.
$(BUILD)/.mooncake-ok: $(BUILD)/.deps-ok
	$(Q)$(PYTHON) -c 'import mooncake.store' 2>/dev/null || { \
	  echo "pinpool: installing $(MOONCAKE_PIP) with pip"; \
	  PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
	  $(PYTHON) -m pip install -q --root-user-action=ignore $(MOONCAKE_PIP) || exit 1; }
	$(Q)$(PYTHON) -c 'import mooncake.store' && touch $@

# One run of protoc-c makes both files (a grouped target: make 4.3).
$(BUILD)/gen/pinpool.pb-c.c $(BUILD)/gen/pinpool.pb-c.h &: proto/pinpool.proto
	$(Q)mkdir -p $(BUILD)/gen
	@echo "  PROTOC  $<"
	$(Q)$(PROTOC_C) --proto_path=proto --c_out=$(BUILD)/gen $<

# Every object waits for the generated header.
$(BUILD)/obj/%.o: %.c $(BUILD)/gen/pinpool.pb-c.h
	$(Q)mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(call layer,$(CFLAGS)) -DPINPOOL_BUILDING -fvisibility=hidden -c $< -o $@
$(BUILD)/obj/$(BUILD)/gen/%.o: $(BUILD)/gen/%.c
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) -fvisibility=hidden -w -c $< -o $@
$(BUILD)/tobj/%.o: %.c $(BUILD)/gen/pinpool.pb-c.h
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(call layer,$(CFLAGS)) -DPOOL_DEBUG -DPINPOOL_BUILDING -c $< -o $@
$(BUILD)/tobj/$(BUILD)/gen/%.o: $(BUILD)/gen/%.c
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) -w -c $< -o $@

# Executables find a `make dist` tree's private libraries in ../lib; DT_RPATH
# (not RUNPATH) so that it also serves the libraries' own dependencies.
RPATH_EXE := -Wl,--disable-new-dtags -Wl,-rpath,'$$ORIGIN/../lib'
RPATH_LIB := -Wl,--disable-new-dtags -Wl,-rpath,'$$ORIGIN'

$(BUILD)/pinpool: $(SRV_OBJ) $(MAIN_OBJ) Makefile | $(BUILD)/mooncake_adapter.py
	@echo "  LD      $@"
	$(Q)$(CC) $(RPATH_EXE) -o $@ $(filter %.o,$^) $(SRV_LIBS)

# The Mooncake tier's adapter lies beside the daemon (where the tier looks
# first; test and bench binaries find it in their ../).
$(BUILD)/mooncake_adapter.py: server/mooncake_adapter.py
	$(Q)mkdir -p $(@D) && cp $< $@

$(BUILD)/libpinpool.so: $(LIB_OBJ) Makefile
	@echo "  LD      $@"
	$(Q)$(CC) -shared -Wl,-soname,libpinpool.so.0 $(RPATH_LIB) -o $@ $(filter %.o,$^) $(LIBS)
	$(Q)ln -sf libpinpool.so $(BUILD)/libpinpool.so.0

$(BUILD)/tests/%: tests/%.c $(TOBJ) $(BUILD)/pinpool
	$(Q)mkdir -p $(dir $@)
	@echo "  TEST    $@"
	$(Q)$(CC) $(CFLAGS) -DPOOL_DEBUG -Itests -o $@ $< $(TOBJ) $(CRIT_LIBS) $(SRV_LIBS)

$(BUILD)/bench/%: bench/%.c $(SRV_OBJ)
	$(Q)mkdir -p $(dir $@)
	@echo "  BENCH   $@"
	$(Q)$(CC) $(CFLAGS) $(RPATH_EXE) -Ibench -o $@ $< $(SRV_OBJ) $(SRV_LIBS)

# A stand-in libcuda.so.1 over host memory (tests/mock/libcuda.c): `make test` drives
# the CUDA code paths (swap API, VMM, device pool) with it where there is no GPU.
MOCK_CUDA := $(if $(wildcard $(CUDA_HOME)/include/cuda.h),$(BUILD)/mockcuda/libcuda.so.1)
$(BUILD)/mockcuda/libcuda.so.1: tests/mock/libcuda.c
	$(Q)mkdir -p $(dir $@)
	@echo "  MOCK    $@"
	$(Q)$(CC) -std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra $(if $(filter 1,$(WERROR)),-Werror) -fPIC \
	  -shared -Wl,-soname,libcuda.so.1 -isystem $(CUDA_HOME)/include -o $@ $< -lpthread

$(BUILD)/tests/gpu_client: tests/gpu/gpu_client.c $(SRV_OBJ)
	$(Q)mkdir -p $(dir $@)
	@echo "  GPU     $@"
	$(Q)$(CC) $(CFLAGS) $(RPATH_EXE) -Ibench -o $@ $< $(SRV_OBJ) $(SRV_LIBS)

# tests/test_runner.c runs tests/run over this Criterion binary (tests/run's own test).
TEST_FIXTURES := $(BUILD)/tests/fixtures/suites
$(BUILD)/tests/fixtures/%: tests/fixtures/%.c tests/util.c tests/util.h
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS_BASE) -Itests -o $@ $< tests/util.c $(CRIT_LIBS) $(LDFLAGS_SAN)

# Suites that may run no test here, with why: tests/run fails on any other suite
# whose every test skipped.
TEST_MAY_SKIP := $(if $(MOCK_CUDA),,--may-skip 'swap_mock=built without cuda.h, so no stand-in driver' \
                 --may-skip 'tms=built without cuda.h, so no stand-in driver')
# The tests that act as other users (tests/users.c) need root to make and become them.
TEST_MAY_SKIP += $(if $(filter 0,$(shell id -u)),,--may-skip 'users=not root: cannot act as another user')

serve: all
	$(BUILD)/pinpool serve $(ARGS)

# Each test binary runs on its own; tests/run prints each one's counts, skipped
# tests included, and fails on a suite that ran no test (TEST_MAY_SKIP excepted).
# Then the Python suite; either failing fails the target.
test: $(BUILD)/.deps-ok $(BUILD)/.mooncake-ok
	$(Q)$(MAKE) --no-print-directory $(BUILD)/pinpool $(BUILD)/libpinpool.so $(TEST_BIN) \
	  $(BUILD)/tests/gpu_client $(BENCH_BIN) $(MOCK_CUDA) $(TEST_FIXTURES)
	$(Q)rc=0; PINPOOL_BIN=$(abspath $(BUILD)/pinpool) LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp) \
	  PINPOOL_PYTHON=$(PYTHON) PINPOOL_BUILD=$(BUILD) PINPOOL_TEST_SANITIZE=$(SANITIZE) \
	  tests/run $(TEST_MAY_SKIP) $(TEST_BIN) || rc=1; \
	  $(MAKE) --no-print-directory test-python || rc=1; exit $$rc

# The cluster's two-node tests (tests/cluster/test_nodes.c: two daemons of one
# --cluster in two network namespaces joined by a veth pair, replicas=2 and a
# segment's death, mooncake_master in HA mode with etcd restarted): about 90 s
# of Mooncake processes, so not in `make test`; .ci/run runs it.
test-cluster: $(BUILD)/.deps-ok $(BUILD)/.mooncake-ok
	$(Q)$(call apt_missing,etcd-server iproute2)
	$(Q)$(MAKE) --no-print-directory $(BUILD)/pinpool $(BUILD)/tests/cluster/test_nodes
	$(Q)PINPOOL_BIN=$(abspath $(BUILD)/pinpool) PINPOOL_PYTHON=$(PYTHON) PINPOOL_BUILD=$(BUILD) \
	  tests/run $(BUILD)/tests/cluster/test_nodes

# ThreadSanitizer.  Criterion binaries cannot start under TSan ("Could not
# initialize inheritable arena"), so the suites that drive the daemon hardest
# (built as usual in $(BUILD)) run against a TSan-built daemon, which exits 66
# on any report (the suites' teardown wants 0); then tests/tsan/threads, a
# TSan-built libpinpool from 8 threads, runs against it (tests/tsan/run).
# tests/tsan.supp names the uninstrumented Debian libraries.  .ci/run runs it.
TSAN_BUILD ?= build/tsan
TSAN_SUITES := test_daemon test_chaos test_spill test_spill_race test_isolation test_objects \
               test_recover test_cli test_arena test_crash test_host test_access test_gms \
               test_takeover
TSAN_ENV := TSAN_OPTIONS="suppressions=$(abspath tests/tsan.supp) exitcode=66 halt_on_error=0"
$(BUILD)/tests/tsan_threads: tests/tsan/threads.c $(LIB_OBJ)
	$(Q)mkdir -p $(dir $@)
	@echo "  TSAN    $@"
	$(Q)$(CC) $(CFLAGS) -o $@ $< $(LIB_OBJ) $(LIBS)
test-tsan: $(BUILD)/.deps-ok $(BUILD)/.mooncake-ok
	$(Q)$(MAKE) --no-print-directory $(BUILD)/pinpool $(BUILD)/libpinpool.so \
	  $(patsubst %,$(BUILD)/tests/%,$(TSAN_SUITES)) $(MOCK_CUDA) $(TEST_FIXTURES)
	$(Q)$(MAKE) --no-print-directory BUILD=$(TSAN_BUILD) SANITIZE=thread \
	  $(TSAN_BUILD)/pinpool $(TSAN_BUILD)/tests/tsan_threads
	$(Q)rc=0; $(TSAN_ENV) PINPOOL_BIN=$(abspath $(TSAN_BUILD)/pinpool) PINPOOL_BUILD=$(BUILD) \
	  PINPOOL_TEST_SANITIZE=thread PINPOOL_PYTHON=$(PYTHON) \
	  tests/run $(TEST_MAY_SKIP) $(patsubst %,$(BUILD)/tests/%,$(TSAN_SUITES)) || rc=1; \
	  $(TSAN_ENV) tests/tsan/run $(TSAN_BUILD) || rc=1; exit $$rc

# Installs the PyPI packages with pip only when one is missing (Debian marks its
# python3 externally managed: allow pip there, as CI runs on a throwaway machine),
# and python3-venv where $(PYTHON) has no ensurepip (Debian's python3 without it
# cannot make the venv that tests/python/test_venv.py installs the package into).
py-deps:
	$(Q)$(PYTHON) -c 'import ensurepip' 2>/dev/null || { $(call apt_missing,python3-venv); }
	$(Q)$(PYTHON) -c 'import grpc, grpc_tools, numpy, pytest, pytest_timeout, msgpack, msgspec' 2>/dev/null || { \
	  echo "pinpool: installing Python packages: $(PY_PACKAGES)"; \
	  PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
	  $(PYTHON) -m pip install -q $(PY_PACKAGES); }

# pytest against the real daemon and library (the package from client/python;
# test_venv.py also pip-installs it into a fresh venv, building the same BUILD).
# Under SANITIZE the library needs its runtime preloaded into python.
test-python: $(BUILD)/.deps-ok py-deps
	$(Q)$(MAKE) --no-print-directory $(BUILD)/pinpool $(BUILD)/libpinpool.so
	@echo "== pytest tests/python"
	$(Q)PYTHONPATH=$(abspath client/python) PINPOOL_BIN=$(abspath $(BUILD)/pinpool) \
	  PINPOOL_LIB=$(abspath $(BUILD)/libpinpool.so) PINPOOL_BUILD=$(BUILD) \
	  PINPOOL_TEST_SANITIZE=$(SANITIZE) $(PY_SAN_ENV) \
	  $(PYTHON) -m pytest -q -p no:cacheprovider --timeout 300 tests/python

bench: $(BUILD)/.deps-ok $(BUILD)/.mooncake-ok py-deps
	$(Q)$(MAKE) --no-print-directory $(BUILD)/pinpool $(BUILD)/libpinpool.so $(BENCH_BIN) $(MOCK_CUDA)
	$(Q)PINPOOL_BIN=$(abspath $(BUILD)/pinpool) PINPOOL_LIB=$(abspath $(BUILD)/libpinpool.so) \
	  PYTHONPATH=$(abspath client/python) PYTHON=$(PYTHON) bench/run $(BUILD)

# The GPU tests; without a GPU they say so and pass.
test-gpu: $(BUILD)/.deps-ok
	$(Q)$(MAKE) --no-print-directory $(BUILD)/pinpool $(BUILD)/tests/gpu_client
	$(Q)rc=0; tests/gpu/run $(BUILD) || rc=1; tests/gpu/run-multi $(BUILD) || rc=1; exit $$rc

# $(call copy_private_libs,FILES,DIR): copy into DIR every shared library that
# FILES need, except glibc's and the NVIDIA driver's (every machine has those).
define copy_private_libs
ldd $(1) | awk '/=> \// {print $$3}' | sort -u | \
  grep -Ev '/(libc|libm|libdl|libpthread|librt|libresolv|ld-linux[^/]*|libcuda)\.so' | \
  xargs -r cp -L -t $(2)/
endef

# A relocatable tree for GPU machines that have only the NVIDIA driver:
# binaries, libpinpool, the header, and private copies of every shared library
# they need except glibc's and the driver's.
DIST ?= $(BUILD)/dist
DIST_BIN := $(BUILD)/pinpool $(BUILD)/tests/gpu_client $(BUILD)/bench/gpu_bench $(BUILD)/bench/rpc_latency \
            $(BUILD)/bench/fanout $(BUILD)/bench/swap
dist: $(BUILD)/.deps-ok
	$(Q)$(MAKE) --no-print-directory $(DIST_BIN) $(BUILD)/libpinpool.so
	$(Q)rm -rf $(DIST) && mkdir -p $(DIST)/bin $(DIST)/lib $(DIST)/include $(DIST)/tests $(DIST)/bench
	$(Q)cp $(DIST_BIN) $(DIST)/bin/
	$(Q)mkdir -p $(DIST)/libexec/pinpool && cp server/mooncake_adapter.py $(DIST)/libexec/pinpool/
	$(Q)cp $(BUILD)/libpinpool.so $(DIST)/lib/libpinpool.so.0 && ln -s libpinpool.so.0 $(DIST)/lib/libpinpool.so
	$(Q)cp $(PUBLIC_HEADERS) $(DIST)/include/
	$(Q)cp tests/gpu/run $(DIST)/tests/run-gpu && cp tests/gpu/run-multi $(DIST)/tests/run-gpu-multi && \
	  cp tests/gpu/test_torch.py tests/gpu/test_tms.py tests/gpu/test_weights.py $(DIST)/tests/
	$(Q)cp bench/gpu_run bench/fanout_run bench/run bench/swap_run bench/swap_plot bench/tms_run bench/tms.py \
	  bench/weights_run bench/weights.py $(DIST)/bench/
	$(Q)mkdir -p $(DIST)/python && cp -r client/python/pinpool $(DIST)/python/ && \
	  find $(DIST)/python -name __pycache__ -prune -exec rm -rf {} +
	$(Q)$(call copy_private_libs,$(DIST_BIN) $(BUILD)/libpinpool.so,$(DIST)/lib)
	@echo "  DIST    $(DIST): $$(ls $(DIST)/lib | wc -l) libraries, $$(du -sh $(DIST) | cut -f1)"

# libpinpool.so with the same private copies, in one folder (PYLIB): the Python
# package's build backend (client/python/_build) runs this and puts them in the
# wheel beside the modules, where the library's RPATH ($ORIGIN) finds them.
PYLIB ?= $(BUILD)/python-lib
python-lib: $(BUILD)/.deps-ok
	$(Q)$(MAKE) --no-print-directory $(BUILD)/libpinpool.so
	$(Q)rm -rf $(PYLIB) && mkdir -p $(PYLIB)
	$(Q)cp $(BUILD)/libpinpool.so $(PYLIB)/
	$(Q)$(call copy_private_libs,$(BUILD)/libpinpool.so,$(PYLIB))
	@echo "  PYLIB   $(PYLIB): libpinpool.so and $$(($$(ls $(PYLIB) | wc -l) - 1)) libraries"

clean:
	rm -rf $(BUILD)

include tests/ops.mk

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
