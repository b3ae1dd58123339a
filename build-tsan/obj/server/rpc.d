build-tsan/obj/server/rpc.o: server/rpc.c server/rpc.h server/log.h \
 client/pinpool.h pool/pinpool_errors.h pool/pool.h server/reserve.h \
 proto/status.h server/workers.h
server/rpc.h:
server/log.h:
client/pinpool.h:
pool/pinpool_errors.h:
pool/pool.h:
server/reserve.h:
proto/status.h:
server/workers.h:
