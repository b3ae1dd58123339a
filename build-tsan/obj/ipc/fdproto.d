build-tsan/obj/ipc/fdproto.o: ipc/fdproto.c ipc/ipc.h \
 pool/pinpool_errors.h
ipc/ipc.h:
pool/pinpool_errors.h:
