build-tsan/obj/pool/units.o: pool/units.c pool/pool.h \
 pool/pinpool_errors.h
pool/pool.h:
pool/pinpool_errors.h:
