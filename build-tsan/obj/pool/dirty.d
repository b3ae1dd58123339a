build-tsan/obj/pool/dirty.o: pool/dirty.c pool/pool_int.h \
 pool/invariants.h pool/pool.h pool/pinpool_errors.h
pool/pool_int.h:
pool/invariants.h:
pool/pool.h:
pool/pinpool_errors.h:
