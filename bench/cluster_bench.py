#!/usr/bin/env python3
"""cluster_bench.py BUILD_DIR - acquire from the cluster on node b vs raw Mooncake get, same run.

Starts mooncake_master + mooncake_client (a 2 GB segment) on loopback with
free ports (bench/mooncake_bench.py), and two daemons of one --cluster on that
store, nodes a and b (256 MiB pools in 64 MiB chunks).  For each object size:
  share           a allocates N slices, fills them, releases them; the time
                  until b's Exists sees the last one (a's sharing queue writes
                  each copy and its record to Mooncake);
  cluster acquire b acquires each object (it has none of them: record read,
                  fetch of a's copy into a fresh slice, mapping), every byte
                  checked, then frees it: GB/s over the wall time of the acquires;
  raw get_into    the wheel's Python client reads the very same copies (the key
                  each record names) into a registered buffer (zero-copy: the
                  fastest raw path), GB/s.
Prints a Markdown table; the ratio column is cluster acquire / raw get.
"""
import ctypes
import os
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mooncake_bench import Mooncake  # noqa: E402

import pinpool  # noqa: E402

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
POOL = 256 << 20
CHUNK = 64 << 20
SIZES = [(4 << 20, 16), (16 << 20, 8), (64 << 20, 3)]
CLUSTER = "bench"


def start_daemon(tmp, uri, node):
    d = os.path.join(tmp, node)
    os.makedirs(d)
    sock = os.path.join(d, "pinpool.sock")
    dlog = open(os.path.join(d, "daemon.log"), "w")
    dout = open(os.path.join(d, "daemon.out"), "w")
    proc = subprocess.Popen(
        [os.environ.get("PINPOOL_BIN", os.path.join(BUILD, "pinpool")), "serve",
         "--socket", sock, "--state-dir", os.path.join(d, "state"),
         "--mem-pool-size", str(POOL), "--chunk-size", str(CHUNK),
         "--spill-low-watermark", "0", "--spill-tier", uri, "--cluster", CLUSTER,
         "--cluster-node", node],
        stdout=dout, stderr=dlog, env=dict(os.environ, GRPC_VERBOSITY="NONE"))
    end = time.time() + 30
    while time.time() < end:
        if open(dout.name).read().startswith("pinpool ready"):
            return proc, sock
        if proc.poll() is not None:
            raise RuntimeError("the daemon exited: " + open(dlog.name).read()[-2000:])
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the daemon did not get ready")


def stop_daemon(proc):
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def copy_key(store, user, key):
    """The Mooncake key of the copy the cluster record of key names (server/cluster.c)."""
    rec = store.get("%s/r/%s/%s" % (CLUSTER, user, key))
    dl = struct.unpack_from("<I", rec, 32)[0]
    return CLUSTER + "/" + rec[40:40 + dl].decode()


def main():
    import pwd
    user = pwd.getpwuid(os.geteuid()).pw_name
    tmp = tempfile.mkdtemp(prefix="pinpool-clusterbench-")
    daemons = []
    try:
        with Mooncake(tmp) as mc:
            uri = mc.uri(tmp) + "&buffer=64MiB"
            for node in ("a", "b"):
                daemons.append(start_daemon(tmp, uri, node))
            a = pinpool.Client(daemons[0][1])
            b = pinpool.Client(daemons[1][1])
            store, m, addr = mc.client(max(s for s, _ in SIZES))
            rows = []
            for size, count in SIZES:
                print("size %d MiB" % (size >> 20), file=sys.stderr)
                data = [os.urandom(size) for _ in range(2)]
                keys = ["c-%d-%d" % (size, i) for i in range(count)]
                t0 = time.perf_counter()
                for i, k in enumerate(keys):
                    s = a.alloc(size)
                    ctypes.memmove(s.ptr, data[i % 2], size)
                    a.release(s, k)
                while not b.exists(keys[-1]):
                    time.sleep(0.005)
                share = time.perf_counter() - t0
                t1 = time.perf_counter()
                got = [b.acquire(k) for k in keys]
                t2 = time.perf_counter()
                for i, s in enumerate(got):
                    assert ctypes.string_at(s.ptr, size) == data[i % 2], "object %d differs" % i
                    b.free(s)
                copies = [copy_key(store, user, k) for k in keys]
                t3 = time.perf_counter()
                for c in copies:
                    assert store.get_into(c, addr, size) == size
                t4 = time.perf_counter()
                assert m[0:size] == data[(count - 1) % 2]
                for k in keys:
                    a.remove(k)
                ca, raw = size * count / (t2 - t1) / 1e9, size * count / (t4 - t3) / 1e9
                rows.append((size, count, share * 1e3 / count, ca, raw))
            a.close()
            b.close()
            store.close()
            for proc, _ in daemons:
                stop_daemon(proc)
            daemons = []
        print("| object | objects | share on a (ms/object, to b's Exists) | cluster acquire on b "
              "GB/s | raw Mooncake get_into GB/s | acquire / get |")
        print("|---|---|---|---|---|---|")
        for size, count, sh, ca, raw in rows:
            print("| %d MiB | %d | %.1f | %.2f | %.2f | %.2f |" % (size >> 20, count, sh, ca, raw,
                                                                 ca / raw))
    finally:
        for proc, _ in daemons:
            proc.kill()
        subprocess.run(["rm", "-rf", tmp])
    os._exit(0)


if __name__ == "__main__":
    main()
