#!/usr/bin/env python3
"""spill_bench.py BUILD_DIR - spill and restore through pinpool vs raw Mooncake, same run.

Starts mooncake_master + mooncake_client (a 2 GB segment) on loopback with
free ports, and `pinpool serve --spill-tier mooncake://...` (a 256 MiB pool,
no background spilling).  For each object size, on the same store, one after
the other:
  pinpool spill    the pool is full of released slices (each filled); N
                   allocations of the same size each force one spill: GB/s over
                   the wall time of the N allocs (RPC, spill, mapping included);
  pinpool restore  the in-use slices freed, N acquires each restore one object
                   (and try to remove its tier copy): GB/s over their wall time;
                   every restored object is checked byte for byte;
  raw Mooncake     the wheel's Python client, put_from/get_into of N objects of
                   the same size from/into a registered buffer (zero-copy: the
                   fastest raw path);
and the daemon's own spill/restore GB/s (time inside tier calls only, from
GetPoolInfo).  Prints a Markdown table; the ratio column is pinpool / raw.
With the PyPI wheel the daemon reaches Mooncake through
server/mooncake_adapter.py (README, "Which way to Mooncake").
"""
import ctypes
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mooncake_bench import Mooncake, raw_zero_copy  # noqa: E402

import pinpool  # noqa: E402

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
POOL = 256 << 20
CHUNK = 64 << 20
SIZES = [(4 << 20, 64), (16 << 20, 16), (64 << 20, 4)]  # N * size == POOL


def through_pinpool(cl, size, count, data):
    keys = ["spill-%d-%d" % (size, i) for i in range(count)]
    for i, k in enumerate(keys):  # the pool fills with released objects
        s = cl.alloc(size)
        ctypes.memmove(s.ptr, data[i % len(data)], size)
        cl.release(s, k)
    before = cl.info()["spill"]
    t0 = time.perf_counter()
    live = [cl.alloc(size) for _ in keys]  # each one spills one object
    t1 = time.perf_counter()
    mid = cl.info()["spill"]
    assert mid["spills"] - before["spills"] == count, (before, mid)
    for s in live:
        cl.free(s)
    t2 = time.perf_counter()
    back = [cl.acquire(k) for k in keys]  # each one restores one object
    t3 = time.perf_counter()
    after = cl.info()["spill"]
    assert after["restores"] - mid["restores"] == count, (mid, after)
    for i, s in enumerate(back):
        assert ctypes.string_at(s.ptr, size) == data[i % len(data)], "object %d differs" % i
        cl.free(s)

    def rate(a, b, what, done):  # the daemon's GB/s over its time in tier calls
        secs = (b[what + "_avg_ms"] * b[what + "s"] - a[what + "_avg_ms"] * a[what + "s"]) / 1e3
        nbytes = b["bytes_" + done] - a["bytes_" + done]
        return nbytes / secs / 1e9 if secs > 0 else 0.0

    return (size * count / (t1 - t0) / 1e9, size * count / (t3 - t2) / 1e9,
            rate(before, mid, "spill", "spilled"), rate(mid, after, "restore", "restored"))


def start_daemon(tmp, uri):
    """`pinpool serve` on the store; (process, socket) once it is ready."""
    sock = os.path.join(tmp, "pinpool.sock")
    dlog = open(os.path.join(tmp, "daemon.log"), "w")
    dout = open(os.path.join(tmp, "daemon.out"), "w")
    proc = subprocess.Popen(
        [os.environ.get("PINPOOL_BIN", os.path.join(BUILD, "pinpool")), "serve",
         "--socket", sock, "--state-dir", os.path.join(tmp, "state"),
         "--mem-pool-size", str(POOL), "--chunk-size", str(CHUNK),
         "--spill-low-watermark", "0", "--spill-tier", uri],
        stdout=dout, stderr=dlog, env=dict(os.environ, GRPC_VERBOSITY="NONE"))
    end = time.time() + 30
    while time.time() < end:
        if open(dout.name).read().startswith("pinpool ready"):
            return proc, sock
        if proc.poll() is not None:
            raise RuntimeError("the daemon exited: " + open(dlog.name).read()[-2000:])
        time.sleep(0.1)
    stop_daemon(proc)
    raise RuntimeError("the daemon did not get ready")


def stop_daemon(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main():
    tmp = tempfile.mkdtemp(prefix="pinpool-spillbench-")
    try:
        with Mooncake(tmp) as mc:
            daemon, sock = start_daemon(tmp, mc.uri(tmp))
            try:
                store, m, addr = mc.client(2 * max(s for s, _ in SIZES))
                cl = pinpool.Client(sock)
                rows = []
                for size, count in SIZES:
                    print("size %d MiB" % (size >> 20), file=sys.stderr)
                    data = [os.urandom(size) for _ in range(2)]
                    ps, pr, ds, dr = through_pinpool(cl, size, count, data)
                    rs, rg = raw_zero_copy(store, size, count, m, addr, data[0])
                    rows.append((size, count, ps, pr, ds, dr, rs, rg))
                cl.close()
                store.close()
            finally:
                stop_daemon(daemon)
        print("| object | objects | pinpool spill GB/s | pinpool restore GB/s | "
              "(daemon: in tier calls) | raw Mooncake put_from GB/s | raw get_into GB/s | "
              "spill / put | restore / get |")
        print("|---|---|---|---|---|---|---|---|---|")
        for size, count, ps, pr, ds, dr, rs, rg in rows:
            print("| %d MiB | %d | %.2f | %.2f | %.2f / %.2f | %.2f | %.2f | %.2f | %.2f |" % (
                size >> 20, count, ps, pr, ds, dr, rs, rg, ps / rs, pr / rg))
    finally:
        subprocess.run(["rm", "-rf", tmp])
    os._exit(0)

if __name__ == "__main__":
    main()
