build-tsan/obj/ipc/host_memfd.o: ipc/host_memfd.c ipc/ipc.h \
 ipc/host_memfd.h pool/pinpool_errors.h
ipc/ipc.h:
ipc/host_memfd.h:
pool/pinpool_errors.h:
