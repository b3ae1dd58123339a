#!/usr/bin/env python3
"""tier_bench.py BUILD_DIR - spill-tier throughput vs raw Mooncake, same run.

Starts mooncake_master + mooncake_client (a 2 GB segment) on loopback with
free ports, then for each size measures, one after the other on the same
store: the wheel's own Python client (put_from/get_into on a registered
buffer: zero-copy, the fastest raw path; and put(bytes)/get()), and
build/bench/tier_bench through the pinpool tier (mooncake:// and file://).
Prints a Markdown table.
"""
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mooncake_bench import Mooncake, raw_zero_copy  # noqa: E402

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
SIZES = [(1 << 20, 64), (16 << 20, 16), (64 << 20, 4)]  # (object size, objects)


def raw(store, size, count, buf, addr):
    keys = ["raw-%d-%d" % (size, i) for i in range(count)]
    src = os.urandom(size)
    out = {"put_from/get_into": raw_zero_copy(store, size, count, buf, addr, src)}
    time.sleep(1.1)
    rm = store.batch_remove(keys, False)
    assert all(rc == 0 for rc in rm), rm
    t0 = time.time()
    for k in keys:
        rc = store.put(k, src)
        if rc != 0:
            print("put(bytes) of %d bytes: %d; skipped" % (size, rc), file=sys.stderr)
            store.batch_remove(keys, False)
            return out
    t1 = time.time()
    for k in keys:
        assert len(store.get(k)) == size
    t2 = time.time()
    out["put/get (bytes)"] = (size * count / (t1 - t0) / 1e9, size * count / (t2 - t1) / 1e9)
    time.sleep(1.1)
    store.batch_remove(keys, False)
    return out


def main():
    tmp = tempfile.mkdtemp(prefix="pinpool-tierbench-")
    try:
        with Mooncake(tmp) as mc:
            store, m, addr = mc.client(2 * max(s for s, _ in SIZES))
            rows = []
            for size, count in SIZES:
                print("size %d MiB" % (size >> 20), file=sys.stderr)
                r = raw(store, size, count, m, addr)
                for name, (p, g) in r.items():
                    rows.append((size, count, "raw Mooncake Python " + name, p, g))
                for u, name in ((mc.uri(tmp), "pinpool tier mooncake://"),
                                ("file://%s/files?fsync=0" % tmp, "pinpool tier file:// (fsync=0)")):
                    outp = subprocess.run([os.path.join(BUILD, "bench", "tier_bench"), u,
                                           str(size), str(count)], capture_output=True, text=True,
                                          timeout=300)
                    if outp.returncode != 0:
                        raise RuntimeError(outp.stderr)
                    for line in outp.stdout.splitlines():
                        _, _, mode, _, _, p, g = line.split()
                        rows.append((size, count, "%s %s" % (name, mode), float(p), float(g)))
            store.close()
        print("| object | objects | path | put GB/s | get GB/s |")
        print("|---|---|---|---|---|")
        for size, count, name, p, g in rows:
            print("| %d MiB | %d | %s | %.2f | %.2f |" % (size >> 20, count, name, p, g))
    finally:
        subprocess.run(["rm", "-rf", tmp])
    os._exit(0)

if __name__ == "__main__":
    main()
