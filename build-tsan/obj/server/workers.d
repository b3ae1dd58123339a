build-tsan/obj/server/workers.o: server/workers.c server/workers.h
server/workers.h:
