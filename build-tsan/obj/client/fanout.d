build-tsan/obj/client/fanout.o: client/fanout.c ipc/cudaload.h \
 client/internal.h client/pinpool.h pool/pinpool_errors.h ipc/ncclload.h
ipc/cudaload.h:
client/internal.h:
client/pinpool.h:
pool/pinpool_errors.h:
ipc/ncclload.h:
