build-tsan/obj/ipc/host_register.o: ipc/host_register.c ipc/ipc.h \
 ipc/host_memfd.h ipc/cudaload.h pool/pinpool_errors.h
ipc/ipc.h:
ipc/host_memfd.h:
ipc/cudaload.h:
pool/pinpool_errors.h:
