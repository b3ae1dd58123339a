build-tsan/obj/proto/status.o: proto/status.c proto/status.h \
 pool/pinpool_errors.h
proto/status.h:
pool/pinpool_errors.h:
