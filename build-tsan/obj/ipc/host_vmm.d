build-tsan/obj/ipc/host_vmm.o: ipc/host_vmm.c ipc/ipc.h ipc/cudaload.h \
 pool/pinpool_errors.h
ipc/ipc.h:
ipc/cudaload.h:
pool/pinpool_errors.h:
