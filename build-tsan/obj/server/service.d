build-tsan/obj/server/service.o: server/service.c server/service_int.h \
 server/service.h server/rpc.h server/srv.h server/config.h ipc/devmem.h \
 ipc/ipc.h pool/pool.h server/tier.h server/log.h client/pinpool.h \
 pool/pinpool_errors.h build-tsan/gen/pinpool.pb-c.h
server/service_int.h:
server/service.h:
server/rpc.h:
server/srv.h:
server/config.h:
ipc/devmem.h:
ipc/ipc.h:
pool/pool.h:
server/tier.h:
server/log.h:
client/pinpool.h:
pool/pinpool_errors.h:
build-tsan/gen/pinpool.pb-c.h:
