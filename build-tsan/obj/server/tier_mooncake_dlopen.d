build-tsan/obj/server/tier_mooncake_dlopen.o: \
 server/tier_mooncake_dlopen.c server/tier_mooncake.h server/tier.h \
 client/pinpool.h pool/pinpool_errors.h
server/tier_mooncake.h:
server/tier.h:
client/pinpool.h:
pool/pinpool_errors.h:
