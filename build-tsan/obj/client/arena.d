build-tsan/obj/client/arena.o: client/arena.c client/internal.h \
 client/pinpool.h pool/pinpool_errors.h pool/pool.h
client/internal.h:
client/pinpool.h:
pool/pinpool_errors.h:
pool/pool.h:
