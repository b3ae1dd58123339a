build-tsan/obj/server/fdsock.o: server/fdsock.c server/fdsock.h \
 server/srv.h server/config.h ipc/devmem.h ipc/ipc.h pool/pool.h \
 server/tier.h server/listener.h server/log.h client/pinpool.h \
 pool/pinpool_errors.h
server/fdsock.h:
server/srv.h:
server/config.h:
ipc/devmem.h:
ipc/ipc.h:
pool/pool.h:
server/tier.h:
server/listener.h:
server/log.h:
client/pinpool.h:
pool/pinpool_errors.h:
