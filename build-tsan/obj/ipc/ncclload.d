build-tsan/obj/ipc/ncclload.o: ipc/ncclload.c ipc/ncclload.h ipc/once.h
ipc/ncclload.h:
ipc/once.h:
