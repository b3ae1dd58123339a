build-tsan/obj/pool/errors.o: pool/errors.c pool/pinpool_errors.h
pool/pinpool_errors.h:
