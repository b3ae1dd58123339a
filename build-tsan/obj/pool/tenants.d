build-tsan/obj/pool/tenants.o: pool/tenants.c pool/pool_int.h \
 pool/invariants.h pool/pool.h pool/pinpool_errors.h pool/rbtree.h \
 pool/rbtree_end.h
pool/pool_int.h:
pool/invariants.h:
pool/pool.h:
pool/pinpool_errors.h:
pool/rbtree.h:
pool/rbtree_end.h:
