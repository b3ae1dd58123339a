build-tsan/tests/tsan_threads: tests/tsan/threads.c client/pinpool.h \
 pool/pinpool_errors.h
client/pinpool.h:
pool/pinpool_errors.h:
