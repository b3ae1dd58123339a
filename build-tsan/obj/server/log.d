build-tsan/obj/server/log.o: server/log.c server/log.h server/dirs.h
server/log.h:
server/dirs.h:
