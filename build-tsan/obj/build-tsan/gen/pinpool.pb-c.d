build-tsan/obj/build-tsan/gen/pinpool.pb-c.o: \
 build-tsan/gen/pinpool.pb-c.c build-tsan/gen/pinpool.pb-c.h
build-tsan/gen/pinpool.pb-c.h:
