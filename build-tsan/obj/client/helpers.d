build-tsan/obj/client/helpers.o: client/helpers.c client/pinpool.h \
 pool/pinpool_errors.h pool/pool.h
client/pinpool.h:
pool/pinpool_errors.h:
pool/pool.h:
