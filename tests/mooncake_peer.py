#!/usr/bin/env python3
"""mooncake_peer.py - an independent Mooncake client for the tier tests.

It uses the wheel's own Python client (mooncake.store.MooncakeDistributedStore)
and nothing of pinpool, to check that what the tier wrote is what any Mooncake
client reads, and the other way round.

  mooncake_peer.py MASTER METADATA get KEY OUTFILE   -> writes the object's bytes
  mooncake_peer.py MASTER METADATA put KEY INFILE    -> stores the file's bytes
  mooncake_peer.py MASTER METADATA replicas KEY OUT  -> the segment of each replica, a line each
  mooncake_peer.py MASTER METADATA remove KEY -      -> removes it (force)
Exit 0 on success, 2 when the key is missing, 1 on any other failure.
"""
import sys

from mooncake.store import MooncakeDistributedStore


def main():
    master, metadata, op, key, path = sys.argv[1:6]
    store = MooncakeDistributedStore()
    rc = store.setup("127.0.0.1", metadata, 0, 64 << 20, "tcp", "", master)
    if rc != 0:
        print("setup failed: %d" % rc, file=sys.stderr)
        return 1
    try:
        if op == "get":
            if store.is_exist(key) != 1:
                return 2
            data = store.get(key)
            with open(path, "wb") as f:
                f.write(data)
            return 0 if len(data) > 0 else 1
        if op == "remove":
            return 0 if store.remove(key, True) == 0 else 2
        if op == "replicas":
            reps = store.get_replica_desc(key)
            if not reps:
                return 2
            with open(path, "w") as f:
                for r in reps:
                    if r.is_memory_replica():
                        d = r.get_memory_descriptor().buffer_descriptor
                        f.write("%s\n" % d.transport_endpoint)
            return 0
        if op == "put":
            with open(path, "rb") as f:
                data = f.read()
            rc = store.put(key, data)
            if rc != 0:
                print("put failed: %d" % rc, file=sys.stderr)
            return 0 if rc == 0 else 1
        return 1
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
