# pinpool - node-local pinned memory pool daemon.
#
#   make            build build/pinpool and build/libpinpool.so (installs deps if missing)
#   make serve      run the daemon with the embedded defaults
#   make test       build and run every test (Criterion)
#   make bench      run the benchmarks (make load: the 64-process load test)
#   make fuzz       build the libFuzzer targets, run each FUZZ_SECONDS (60)
#   make soak       the crash test with SOAK_CYCLES (10000) killed clients
#   make valgrind   a daemon run under valgrind (errors and leaks fail it)
#   make install    PREFIX=/usr/local DESTDIR=: binary, library, header,
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
                libcriterion-dev libbsd-dev pkg-config

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
               -Iclient -Ipool -Iipc -Iserver -I$(BUILD)/gen
ifneq ($(SANITIZE),)
CFLAGS_BASE += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
LDFLAGS_SAN := -fsanitize=$(SANITIZE)
endif
ifneq ($(filter undefined,$(subst $(comma), ,$(SANITIZE))),)
# UBSan reports must fail the run, not scroll past.
CFLAGS_BASE += -fno-sanitize-recover=undefined
LDFLAGS_SAN += -fno-sanitize-recover=undefined
endif

# pkg-config is only asked once the deps are there (see `deps`).
GRPC_CFLAGS = $(shell $(PKG) --cflags grpc libprotobuf-c 2>/dev/null)
GRPC_LIBS   = $(shell $(PKG) --libs grpc libprotobuf-c 2>/dev/null)
LIBS        = $(GRPC_LIBS) -lev -lpthread $(LDFLAGS_SAN)
CRIT_LIBS   = $(shell $(PKG) --libs criterion 2>/dev/null)

CFLAGS  = $(CFLAGS_BASE) $(GRPC_CFLAGS) $(EXTRA_CFLAGS)

GEN_SRC := $(BUILD)/gen/pinpool.pb-c.c
POOL_SRC := $(wildcard pool/*.c)
IPC_SRC  := $(wildcard ipc/*.c)
SRV_SRC  := $(filter-out server/main.c,$(wildcard server/*.c))
CLI_SRC  := $(wildcard client/*.c)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_HELPERS := $(filter-out $(TEST_SRC),$(wildcard tests/*.c))
BENCH_SRC := $(wildcard bench/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(notdir $(1)))
# Objects for the shipped binaries, and a second set built with POOL_DEBUG
# (allocator invariants checked after every operation) for the tests.
COMMON_SRC := $(POOL_SRC) $(IPC_SRC) $(GEN_SRC)
LIB_OBJ    := $(addprefix $(BUILD)/obj/,$(addsuffix .o,$(basename $(COMMON_SRC) $(CLI_SRC))))
SRV_OBJ    := $(addprefix $(BUILD)/obj/,$(addsuffix .o,$(basename $(COMMON_SRC) $(SRV_SRC) $(CLI_SRC))))
MAIN_OBJ   := $(BUILD)/obj/server/main.o
TOBJ       := $(addprefix $(BUILD)/tobj/,$(addsuffix .o,$(basename $(COMMON_SRC) $(SRV_SRC) $(CLI_SRC) $(TEST_HELPERS))))
TEST_BIN   := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
BENCH_BIN  := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

.PHONY: all deps serve test bench clean fuzz soak load valgrind install
.SECONDARY:
.DEFAULT_GOAL := all

all: $(BUILD)/.deps-ok
	$(Q)$(MAKE) --no-print-directory $(BUILD)/pinpool $(BUILD)/libpinpool.so

# Installs what is missing with apt-get (as root, or through sudo).
deps: $(BUILD)/.deps-ok
$(BUILD)/.deps-ok: Makefile
	$(Q)missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "pinpool: installing Debian packages:$$missing"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing || exit 1; \
	fi
	$(Q)mkdir -p $(BUILD) && touch $@

$(BUILD)/gen/pinpool.pb-c.c $(BUILD)/gen/pinpool.pb-c.h: proto/pinpool.proto
	$(Q)mkdir -p $(BUILD)/gen
	@echo "  PROTOC  $<"
	$(Q)$(PROTOC_C) --proto_path=proto --c_out=$(BUILD)/gen $<

# Every object waits for the generated header.
$(BUILD)/obj/%.o: %.c $(BUILD)/gen/pinpool.pb-c.h
	$(Q)mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) -DPINPOOL_BUILDING -fvisibility=hidden -c $< -o $@
$(BUILD)/obj/$(BUILD)/gen/%.o: $(BUILD)/gen/%.c
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) -fvisibility=hidden -w -c $< -o $@
$(BUILD)/tobj/%.o: %.c $(BUILD)/gen/pinpool.pb-c.h
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) -DPOOL_DEBUG -DPINPOOL_BUILDING -c $< -o $@
$(BUILD)/tobj/$(BUILD)/gen/%.o: $(BUILD)/gen/%.c
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) -w -c $< -o $@

$(BUILD)/pinpool: $(SRV_OBJ) $(MAIN_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) -o $@ $^ $(LIBS)

$(BUILD)/libpinpool.so: $(LIB_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) -shared -Wl,-soname,libpinpool.so.0 -o $@ $^ $(LIBS)
	$(Q)ln -sf libpinpool.so $(BUILD)/libpinpool.so.0

$(BUILD)/tests/%: tests/%.c $(TOBJ) $(BUILD)/pinpool
	$(Q)mkdir -p $(dir $@)
	@echo "  TEST    $@"
	$(Q)$(CC) $(CFLAGS) -DPOOL_DEBUG -Itests -o $@ $< $(TOBJ) $(CRIT_LIBS) $(LIBS)

$(BUILD)/bench/%: bench/%.c $(SRV_OBJ)
	$(Q)mkdir -p $(dir $@)
	@echo "  BENCH   $@"
	$(Q)$(CC) $(CFLAGS) -Ibench -o $@ $< $(SRV_OBJ) $(LIBS)

serve: all
	$(BUILD)/pinpool serve $(ARGS)

# Each test binary runs on its own; the summary line of each is Criterion's.
test: $(BUILD)/.deps-ok
	$(Q)$(MAKE) --no-print-directory $(BUILD)/pinpool $(BUILD)/libpinpool.so $(TEST_BIN)
	$(Q)PINPOOL_BIN=$(abspath $(BUILD)/pinpool) LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp) \
	  PINPOOL_BUILD=$(BUILD) PINPOOL_TEST_SANITIZE=$(SANITIZE) tests/run $(TEST_BIN)

bench: $(BUILD)/.deps-ok
	$(Q)$(MAKE) --no-print-directory $(BUILD)/pinpool $(BENCH_BIN)
	$(Q)PINPOOL_BIN=$(abspath $(BUILD)/pinpool) bench/run $(BUILD)

clean:
	rm -rf $(BUILD)

include tests/ops.mk

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
