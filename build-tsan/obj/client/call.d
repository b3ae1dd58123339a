build-tsan/obj/client/call.o: client/call.c client/internal.h \
 client/pinpool.h pool/pinpool_errors.h proto/status.h
client/internal.h:
client/pinpool.h:
pool/pinpool_errors.h:
proto/status.h:
