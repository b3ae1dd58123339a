build-tsan/obj/client/objects.o: client/objects.c client/internal.h \
 client/pinpool.h pool/pinpool_errors.h build-tsan/gen/pinpool.pb-c.h
client/internal.h:
client/pinpool.h:
pool/pinpool_errors.h:
build-tsan/gen/pinpool.pb-c.h:
