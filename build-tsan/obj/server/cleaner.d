build-tsan/obj/server/cleaner.o: server/cleaner.c server/srv_int.h \
 pool/objects.h server/srv.h server/config.h ipc/devmem.h ipc/ipc.h \
 pool/pool.h server/tier.h server/log.h client/pinpool.h \
 pool/pinpool_errors.h
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
