build-tsan/obj/server/tier_mooncake.o: server/tier_mooncake.c \
 server/tier_mooncake.h server/tier.h client/pinpool.h \
 pool/pinpool_errors.h pool/pool.h
server/tier_mooncake.h:
server/tier.h:
client/pinpool.h:
pool/pinpool_errors.h:
pool/pool.h:
