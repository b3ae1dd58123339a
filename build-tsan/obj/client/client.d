build-tsan/obj/client/client.o: client/client.c ipc/cudaload.h \
 ipc/devmem.h client/internal.h client/pinpool.h pool/pinpool_errors.h \
 ipc/ipc.h ipc/paths.h build-tsan/gen/pinpool.pb-c.h pool/rbtree.h \
 pool/rbtree_end.h
ipc/cudaload.h:
ipc/devmem.h:
client/internal.h:
client/pinpool.h:
pool/pinpool_errors.h:
ipc/ipc.h:
ipc/paths.h:
build-tsan/gen/pinpool.pb-c.h:
pool/rbtree.h:
pool/rbtree_end.h:
