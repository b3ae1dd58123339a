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
import mmap
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tier_bench import PKG, free_port, wait_port  # noqa: E402

import pinpool  # noqa: E402
from mooncake.store import MooncakeDistributedStore  # noqa: E402

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


def raw(store, size, count, buf, addr, data):
    keys = ["raw-%d-%d" % (size, i) for i in range(count)]
    buf[0:size] = data[0]
    t0 = time.perf_counter()
    for k in keys:
        assert store.put_from(k, addr, size) == 0
    t1 = time.perf_counter()
    for k in keys:
        assert store.get_into(k, addr + size, size) == size
    t2 = time.perf_counter()
    assert buf[size:2 * size] == data[0]
    return size * count / (t1 - t0) / 1e9, size * count / (t2 - t1) / 1e9


def main():
    tmp = tempfile.mkdtemp(prefix="pinpool-spillbench-")
    mp, hp, xp, cp = free_port(), free_port(), free_port(), free_port()
    meta = "http://127.0.0.1:%d/metadata" % hp
    log = open(os.path.join(tmp, "mooncake.log"), "w")
    procs = [subprocess.Popen([os.path.join(PKG, "mooncake_master"), "--rpc_port=%d" % mp,
                               "--rpc_address=127.0.0.1", "--enable_http_metadata_server=true",
                               "--http_metadata_server_host=127.0.0.1",
                               "--http_metadata_server_port=%d" % hp, "--metrics_port=%d" % xp,
                               "--default_kv_lease_ttl=1000"], stdout=log, stderr=log)]
    try:
        wait_port(mp)
        wait_port(hp)
        procs.append(subprocess.Popen([os.path.join(PKG, "mooncake_client"), "--port=%d" % cp,
                                       "--host=127.0.0.1", "--master_server_address=127.0.0.1:%d" % mp,
                                       "--metadata_server=" + meta, "--global_segment_size=2GB",
                                       "--protocol=tcp"], stdout=log, stderr=log))
        wait_port(cp)
        time.sleep(0.5)
        sock = os.path.join(tmp, "pinpool.sock")
        uri = "mooncake://127.0.0.1:%d?metadata=%s&log=%s/adapter.log" % (mp, meta, tmp)
        dlog = open(os.path.join(tmp, "daemon.log"), "w")
        dout = open(os.path.join(tmp, "daemon.out"), "w")
        procs.append(subprocess.Popen(
            [os.environ.get("PINPOOL_BIN", os.path.join(BUILD, "pinpool")), "serve",
             "--socket", sock, "--state-dir", os.path.join(tmp, "state"),
             "--mem-pool-size", str(POOL), "--chunk-size", str(CHUNK),
             "--spill-low-watermark", "0", "--spill-tier", uri],
            stdout=dout, stderr=dlog, env=dict(os.environ, GRPC_VERBOSITY="NONE")))
        end = time.time() + 30
        while time.time() < end:
            if open(os.path.join(tmp, "daemon.out")).read().startswith("pinpool ready"):
                break
            if procs[-1].poll() is not None:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the daemon did not get ready")
        if procs[-1].poll() is not None:
            raise RuntimeError("the daemon exited: " + open(dlog.name).read()[-2000:])

        store = MooncakeDistributedStore()
        assert store.setup("127.0.0.1", meta, 0, 256 << 20, "tcp", "", "127.0.0.1:%d" % mp) == 0
        big = max(s for s, _ in SIZES)
        m = mmap.mmap(-1, 2 * big)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        assert store.register_buffer(addr, 2 * big) == 0
        cl = pinpool.Client(sock)
        rows = []
        for size, count in SIZES:
            print("size %d MiB" % (size >> 20), file=sys.stderr)
            data = [os.urandom(size) for _ in range(2)]
            ps, pr, ds, dr = through_pinpool(cl, size, count, data)
            rs, rg = raw(store, size, count, m, addr, data)
            rows.append((size, count, ps, pr, ds, dr, rs, rg))
        cl.close()
        store.close()
        print("| object | objects | pinpool spill GB/s | pinpool restore GB/s | "
              "(daemon: in tier calls) | raw Mooncake put_from GB/s | raw get_into GB/s | "
              "spill / put | restore / get |")
        print("|---|---|---|---|---|---|---|---|---|")
        for size, count, ps, pr, ds, dr, rs, rg in rows:
            print("| %d MiB | %d | %.2f | %.2f | %.2f / %.2f | %.2f | %.2f | %.2f | %.2f |" % (
                size >> 20, count, ps, pr, ds, dr, rs, rg, ps / rs, pr / rg))
    finally:
        for p in reversed(procs):
            if p.args[1:2] == ["serve"]:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            else:
                p.kill()
                p.wait()
        subprocess.run(["rm", "-rf", tmp])
    os._exit(0)


if __name__ == "__main__":
    main()
