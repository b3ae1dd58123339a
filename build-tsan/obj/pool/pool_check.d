build-tsan/obj/pool/pool_check.o: pool/pool_check.c pool/pool_int.h \
 pool/invariants.h pool/pool.h pool/pinpool_errors.h
pool/pool_int.h:
pool/invariants.h:
pool/pool.h:
pool/pinpool_errors.h:
