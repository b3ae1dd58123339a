#!/usr/bin/env python3
"""tier_bench.py BUILD_DIR - spill-tier throughput vs raw Mooncake, same run.

Starts mooncake_master + mooncake_client (a 2 GB segment) on loopback with
free ports, then for each size measures, one after the other on the same
store: the wheel's own Python client (put_from/get_into on a registered
buffer: zero-copy, the fastest raw path; and put(bytes)/get()), and
build/bench/tier_bench through the pinpool tier (mooncake:// and file://).
Prints a Markdown table.
"""
import ctypes
import mmap
import os
import socket
import subprocess
import sys
import tempfile
import time

import mooncake
from mooncake.store import MooncakeDistributedStore

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
SIZES = [(1 << 20, 64), (16 << 20, 16), (64 << 20, 4)]  # (object size, objects)
PKG = os.path.dirname(mooncake.__file__)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, secs=20):
    end = time.time() + secs
    while time.time() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("port %d did not open" % port)


def raw(store, size, count, buf, addr):
    keys = ["raw-%d-%d" % (size, i) for i in range(count)]
    src = os.urandom(size)
    buf[0:size] = src
    out = {}
    t0 = time.time()
    for k in keys:
        assert store.put_from(k, addr, size) == 0
    t1 = time.time()
    for k in keys:
        assert store.get_into(k, addr + size, size) == size
    t2 = time.time()
    assert buf[size:2 * size] == src
    out["put_from/get_into"] = (size * count / (t1 - t0) / 1e9, size * count / (t2 - t1) / 1e9)
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
        store = MooncakeDistributedStore()
        assert store.setup("127.0.0.1", meta, 0, 256 << 20, "tcp", "", "127.0.0.1:%d" % mp) == 0
        big = max(s for s, _ in SIZES)
        m = mmap.mmap(-1, 2 * big)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        assert store.register_buffer(addr, 2 * big) == 0
        uri = "mooncake://127.0.0.1:%d?metadata=%s&log=%s/adapter.log" % (mp, meta, tmp)
        rows = []
        for size, count in SIZES:
            print("size %d MiB" % (size >> 20), file=sys.stderr)
            r = raw(store, size, count, m, addr)
            for name, (p, g) in r.items():
                rows.append((size, count, "raw Mooncake Python " + name, p, g))
            for u, name in ((uri, "pinpool tier mooncake://"),
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
        for p in reversed(procs):
            p.kill()
            p.wait()
        subprocess.run(["rm", "-rf", tmp])
    os._exit(0)


if __name__ == "__main__":
    main()
