build-tsan/obj/server/metrics.o: server/metrics.c server/metrics.h \
 server/rpc.h server/srv.h server/config.h ipc/devmem.h ipc/ipc.h \
 pool/pool.h server/tier.h client/pinpool.h pool/pinpool_errors.h
server/metrics.h:
server/rpc.h:
server/srv.h:
server/config.h:
ipc/devmem.h:
ipc/ipc.h:
pool/pool.h:
server/tier.h:
client/pinpool.h:
pool/pinpool_errors.h:
