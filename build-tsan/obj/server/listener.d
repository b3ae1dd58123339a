build-tsan/obj/server/listener.o: server/listener.c server/listener.h \
 server/dirs.h server/log.h
server/listener.h:
server/dirs.h:
server/log.h:
