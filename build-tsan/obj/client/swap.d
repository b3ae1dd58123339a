build-tsan/obj/client/swap.o: client/swap.c client/internal.h \
 client/pinpool.h pool/pinpool_errors.h client/swap_int.h ipc/cudaload.h
client/internal.h:
client/pinpool.h:
pool/pinpool_errors.h:
client/swap_int.h:
ipc/cudaload.h:
