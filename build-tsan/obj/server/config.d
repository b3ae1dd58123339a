build-tsan/obj/server/config.o: server/config.c server/config.h \
 server/dirs.h server/log.h ipc/paths.h client/pinpool.h \
 pool/pinpool_errors.h pool/pool.h
server/config.h:
server/dirs.h:
server/log.h:
ipc/paths.h:
client/pinpool.h:
pool/pinpool_errors.h:
pool/pool.h:
