build-tsan/obj/pool/extents.o: pool/extents.c pool/pool_int.h \
 pool/invariants.h pool/pool.h pool/rbtree.h pool/rbtree_end.h
pool/pool_int.h:
pool/invariants.h:
pool/pool.h:
pool/rbtree.h:
pool/rbtree_end.h:
