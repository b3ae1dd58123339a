build-tsan/obj/ipc/paths.o: ipc/paths.c ipc/paths.h
ipc/paths.h:
