build-tsan/obj/server/main.o: server/main.c server/cli.h server/config.h \
 server/dirs.h server/fdsock.h server/srv.h ipc/devmem.h ipc/ipc.h \
 pool/pool.h server/tier.h server/listener.h server/log.h \
 server/metrics.h server/rpc.h ipc/paths.h client/pinpool.h \
 pool/pinpool_errors.h server/reserve.h server/service.h server/tcpauth.h
server/cli.h:
server/config.h:
server/dirs.h:
server/fdsock.h:
server/srv.h:
ipc/devmem.h:
ipc/ipc.h:
pool/pool.h:
server/tier.h:
server/listener.h:
server/log.h:
server/metrics.h:
server/rpc.h:
ipc/paths.h:
client/pinpool.h:
pool/pinpool_errors.h:
server/reserve.h:
server/service.h:
server/tcpauth.h:
