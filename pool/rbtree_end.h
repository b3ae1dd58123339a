/* rbtree_end.h - see rbtree.h. */
#ifdef PINPOOL_DEFINED_UNUSED
#undef __unused
#undef PINPOOL_DEFINED_UNUSED
#endif
