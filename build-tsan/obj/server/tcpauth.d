build-tsan/obj/server/tcpauth.o: server/tcpauth.c server/tcpauth.h \
 server/config.h client/pinpool.h pool/pinpool_errors.h
server/tcpauth.h:
server/config.h:
client/pinpool.h:
pool/pinpool_errors.h:
