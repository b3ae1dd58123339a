build-tsan/obj/server/cli.o: server/cli.c server/cli.h client/internal.h \
 client/pinpool.h pool/pinpool_errors.h ipc/paths.h client/pinpool.h \
 build-tsan/gen/pinpool.pb-c.h
server/cli.h:
client/internal.h:
client/pinpool.h:
pool/pinpool_errors.h:
ipc/paths.h:
client/pinpool.h:
build-tsan/gen/pinpool.pb-c.h:
