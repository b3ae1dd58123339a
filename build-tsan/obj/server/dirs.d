build-tsan/obj/server/dirs.o: server/dirs.c server/dirs.h
server/dirs.h:
