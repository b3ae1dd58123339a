build-tsan/obj/ipc/fdpass.o: ipc/fdpass.c ipc/ipc.h
ipc/ipc.h:
