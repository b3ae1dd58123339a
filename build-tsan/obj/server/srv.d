build-tsan/obj/server/srv.o: server/srv.c server/srv_int.h pool/objects.h \
 server/srv.h server/config.h ipc/devmem.h ipc/ipc.h pool/pool.h \
 server/tier.h server/log.h client/pinpool.h pool/pinpool_errors.h
server/srv_int.h:
pool/objects.h:
server/srv.h:
server/config.h:
ipc/devmem.h:
ipc/ipc.h:
pool/pool.h:
server/tier.h:
server/log.h:
client/pinpool.h:
pool/pinpool_errors.h:
