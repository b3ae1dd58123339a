build-tsan/obj/server/reserve.o: server/reserve.c server/reserve.h \
 server/log.h pool/pool.h
server/reserve.h:
server/log.h:
pool/pool.h:
