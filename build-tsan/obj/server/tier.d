build-tsan/obj/server/tier.o: server/tier.c server/tier.h \
 client/pinpool.h pool/pinpool_errors.h server/tier_index.h
server/tier.h:
client/pinpool.h:
pool/pinpool_errors.h:
server/tier_index.h:
