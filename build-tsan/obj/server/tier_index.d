build-tsan/obj/server/tier_index.o: server/tier_index.c \
 server/tier_index.h server/tier.h client/pinpool.h pool/pinpool_errors.h \
 pool/rbtree.h pool/rbtree_end.h
server/tier_index.h:
server/tier.h:
client/pinpool.h:
pool/pinpool_errors.h:
pool/rbtree.h:
pool/rbtree_end.h:
