# tests/ops.mk - included by the Makefile: fuzzing, the soak, the load test,
# valgrind, and `make install`.  Uses the Makefile's variables.

# ---- fuzzing (libFuzzer: clang from Debian) ---------------------------------
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_PACKAGES := clang libclang-rt-14-dev
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS   = $(CFLAGS_BASE) $(GRPC_CFLAGS) -DPOOL_DEBUG -Itests/fuzz $(FUZZ_SAN)
# The daemon's objects as the binary has them (and the client library's), so
# that a new file in server/ cannot be forgotten here.
FUZZ_SRV_SRC  = $(SRV_SRC) $(CLI_SRC)
FUZZ_OBJ      = $(addprefix $(BUILD)/fuzz/obj/,$(addsuffix .o,$(basename $(COMMON_SRC) $(FUZZ_SRV_SRC))))
FUZZ_TARGETS := rpc fdsock gms
FUZZ_BIN     := $(patsubst %,$(BUILD)/fuzz/fuzz_%,$(FUZZ_TARGETS))


$(BUILD)/.fuzz-deps-ok: tests/ops.mk $(BUILD)/.deps-ok
	$(Q)$(call apt_missing,$(FUZZ_PACKAGES))
	$(Q)touch $@

$(BUILD)/fuzz/obj/%.o: %.c $(BUILD)/gen/pinpool.pb-c.h $(BUILD)/.fuzz-deps-ok
	$(Q)mkdir -p $(dir $@)
	@echo "  FUZZCC  $<"
	$(Q)$(FUZZ_CC) $(call layer,$(FUZZ_CFLAGS)) -DPINPOOL_BUILDING -fsanitize=fuzzer-no-link -c $< -o $@
$(BUILD)/fuzz/obj/$(BUILD)/gen/%.o: $(BUILD)/gen/%.c $(BUILD)/.fuzz-deps-ok
	$(Q)mkdir -p $(dir $@)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -w -c $< -o $@
$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/common.h $(FUZZ_OBJ)
	@echo "  FUZZ    $@"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJ) $(GRPC_LIBS) $(MHD_LIBS) -lxxhash -lmsgpackc -lcrypto -lev -ldl -lpthread
$(BUILD)/fuzz/seeds: tests/fuzz/seeds.c $(BUILD)/obj/$(BUILD)/gen/pinpool.pb-c.o $(BUILD)/obj/ipc/fdproto.o
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(GRPC_LIBS)

# Each target runs FUZZ_SECONDS from the seeds plus what earlier runs found
# (build/fuzz/corpus/NAME); a crash leaves build/fuzz/crash-* and fails.
fuzz: $(BUILD)/.fuzz-deps-ok
	$(Q)$(MAKE) --no-print-directory $(FUZZ_BIN) $(BUILD)/fuzz/seeds
	$(Q)$(BUILD)/fuzz/seeds $(BUILD)/fuzz/seed-corpus
	$(Q)for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(BUILD)/fuzz/corpus/$$t; \
	  echo "== fuzz_$$t: $(FUZZ_SECONDS) s"; \
	  ASAN_OPTIONS=detect_leaks=1 $(BUILD)/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) \
	    -print_final_stats=1 -artifact_prefix=$(BUILD)/fuzz/ -max_len=4096 \
	    $(BUILD)/fuzz/corpus/$$t $(BUILD)/fuzz/seed-corpus/$$t 2>$(BUILD)/fuzz/$$t.log; rc=$$?; \
	  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ *DONE)|ERROR|SUMMARY|invariant' \
	    $(BUILD)/fuzz/$$t.log | sed 's/^/   /'; \
	  [ $$rc -eq 0 ] || { tail -n 60 $(BUILD)/fuzz/$$t.log; echo "fuzz_$$t failed (exit $$rc)"; exit 1; }; \
	done

# ---- the soak: the crash test with many more cycles ----------------------------
SOAK_CYCLES ?= 10000
soak: $(BUILD)/.deps-ok
	$(Q)$(MAKE) --no-print-directory $(BUILD)/pinpool $(BUILD)/tests/test_crash
	$(Q)PINPOOL_BIN=$(abspath $(BUILD)/pinpool) CRASH_CYCLES=$(SOAK_CYCLES) \
	  LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp) \
	  $(BUILD)/tests/test_crash --filter 'crash/*' --timeout 3600 --verbose

# ---- the load test: 64 processes x 10,000 operations -----------------------------
LOAD_PROCS ?= 64
LOAD_OPS   ?= 10000
load: $(BUILD)/.deps-ok
	$(Q)$(MAKE) --no-print-directory $(BUILD)/pinpool $(BUILD)/bench/load
	$(Q)PINPOOL_BIN=$(abspath $(BUILD)/pinpool) bench/run $(BUILD) load $(LOAD_PROCS) $(LOAD_OPS)

# ---- valgrind: a clean daemon run ----------------------------------------------------
$(BUILD)/.valgrind-deps-ok: tests/ops.mk $(BUILD)/.deps-ok
	$(Q)$(call apt_missing,valgrind)
	$(Q)touch $@
valgrind: $(BUILD)/.valgrind-deps-ok
	$(Q)$(MAKE) --no-print-directory $(BUILD)/pinpool $(BUILD)/bench/rpc_latency
	$(Q)tests/valgrind.sh $(BUILD)

# ---- install ----------------------------------------------------------------------------
PREFIX     ?= /usr/local
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
UNITDIR    ?= $(PREFIX)/lib/systemd/system
VERSION    := $(shell sed -n 's/^\#define PINPOOL_VERSION_STRING "\(.*\)"/\1/p' client/pinpool.h)
SUBST = sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
            -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g'

$(BUILD)/pinpool.pc: client/pinpool.pc.in client/pinpool.h tests/ops.mk
	$(Q)$(SUBST) $< >$@
$(BUILD)/pinpool.service: server/pinpool.service.in tests/ops.mk
	$(Q)$(SUBST) $< >$@

# The library is installed as libpinpool.so.VERSION with the soname link
# libpinpool.so.0 and the development link libpinpool.so.
install: all $(BUILD)/pinpool.pc $(BUILD)/pinpool.service
	$(Q)install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) \
	  $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(UNITDIR)
	$(Q)install -m 0755 $(BUILD)/pinpool $(DESTDIR)$(BINDIR)/pinpool
	$(Q)install -D -m 0644 server/mooncake_adapter.py $(DESTDIR)$(PREFIX)/libexec/pinpool/mooncake_adapter.py
	$(Q)install -m 0755 $(BUILD)/libpinpool.so $(DESTDIR)$(LIBDIR)/libpinpool.so.$(VERSION)
	$(Q)ln -sf libpinpool.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libpinpool.so.0
	$(Q)ln -sf libpinpool.so.0 $(DESTDIR)$(LIBDIR)/libpinpool.so
	$(Q)install -m 0644 $(PUBLIC_HEADERS) $(DESTDIR)$(INCLUDEDIR)/
	$(Q)install -m 0644 $(BUILD)/pinpool.pc $(DESTDIR)$(PKGCONFIGDIR)/pinpool.pc
	$(Q)install -m 0644 $(BUILD)/pinpool.service $(DESTDIR)$(UNITDIR)/pinpool.service
	@echo "  INSTALL $(DESTDIR)$(PREFIX): bin/pinpool libexec/pinpool/mooncake_adapter.py lib/libpinpool.so.$(VERSION) $(addprefix include/,$(notdir $(PUBLIC_HEADERS))) pinpool.pc pinpool.service"
