build-tsan/obj/pool/objects.o: pool/objects.c pool/objects.h \
 pool/invariants.h pool/pinpool_errors.h pool/rbtree.h pool/rbtree_end.h
pool/objects.h:
pool/invariants.h:
pool/pinpool_errors.h:
pool/rbtree.h:
pool/rbtree_end.h:
