build-tsan/obj/ipc/cudaload.o: ipc/cudaload.c ipc/cudaload.h ipc/once.h \
 pool/pinpool_errors.h
ipc/cudaload.h:
ipc/once.h:
pool/pinpool_errors.h:
