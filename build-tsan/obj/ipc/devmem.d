build-tsan/obj/ipc/devmem.o: ipc/devmem.c ipc/devmem.h ipc/cudaload.h \
 pool/pinpool_errors.h
ipc/devmem.h:
ipc/cudaload.h:
pool/pinpool_errors.h:
