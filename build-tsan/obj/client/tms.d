build-tsan/obj/client/tms.o: client/tms.c client/internal.h \
 client/pinpool.h pool/pinpool_errors.h client/swap_int.h ipc/cudaload.h
client/internal.h:
client/pinpool.h:
pool/pinpool_errors.h:
client/swap_int.h:
ipc/cudaload.h:
