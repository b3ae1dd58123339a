build-tsan/obj/server/rpc_work.o: server/rpc_work.c client/pinpool.h \
 pool/pinpool_errors.h pool/pool.h server/rpc.h
client/pinpool.h:
pool/pinpool_errors.h:
pool/pool.h:
server/rpc.h:
