build-tsan/obj/server/tier_mooncake_adapter.o: \
 server/tier_mooncake_adapter.c server/tier_mooncake.h server/tier.h \
 ipc/ipc.h client/pinpool.h pool/pinpool_errors.h
server/tier_mooncake.h:
server/tier.h:
ipc/ipc.h:
client/pinpool.h:
pool/pinpool_errors.h:
