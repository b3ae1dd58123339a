build-tsan/obj/server/tier_file.o: server/tier_file.c server/tier.h \
 server/dirs.h client/pinpool.h pool/pinpool_errors.h
server/tier.h:
server/dirs.h:
client/pinpool.h:
pool/pinpool_errors.h:
