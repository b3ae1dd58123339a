/*
 * rbtree.h - libbsd's red-black tree macros (<bsd/sys/tree.h>), made usable.
 *
 * RB_GENERATE_STATIC expands to "__unused static" functions, but libbsd leaves
 * __unused undefined (Linux headers use the name for struct members).  Include
 * this after every other header; put the RB_GENERATE_STATIC lines right after
 * it, then #include "rbtree_end.h" to drop the definition again.
 */
#ifndef __unused
#define __unused __attribute__((__unused__))
#define PINPOOL_DEFINED_UNUSED
#endif
#include <bsd/sys/tree.h>
