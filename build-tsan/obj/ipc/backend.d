build-tsan/obj/ipc/backend.o: ipc/backend.c ipc/ipc.h
ipc/ipc.h:
