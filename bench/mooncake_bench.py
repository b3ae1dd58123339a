"""mooncake_bench.py - what tier_bench.py and spill_bench.py share: a Mooncake store on
loopback and the raw Python client's zero-copy numbers.

Mooncake(tmp) starts mooncake_master (with its HTTP metadata server) and a
mooncake_client contributing a 2 GB segment, on free ports, and waits for their ports;
.uri(tmp) is the pinpool spill-tier URI of that store, .client(buffer_bytes) a
connected MooncakeDistributedStore with a registered buffer of that size.
raw_zero_copy() measures put_from/get_into, the fastest raw path.
Owns: the two Mooncake processes (killed by close(), or on leaving a with block).
Never: starts pinpool.
"""
import ctypes
import mmap
import os
import socket
import subprocess
import time

import mooncake
from mooncake.store import MooncakeDistributedStore

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


class Mooncake:
    def __init__(self, tmp):
        self.master, hp, xp, cp = free_port(), free_port(), free_port(), free_port()
        self.meta = "http://127.0.0.1:%d/metadata" % hp
        log = open(os.path.join(tmp, "mooncake.log"), "w")
        self.procs = [subprocess.Popen(
            [os.path.join(PKG, "mooncake_master"), "--rpc_port=%d" % self.master,
             "--rpc_address=127.0.0.1", "--enable_http_metadata_server=true",
             "--http_metadata_server_host=127.0.0.1", "--http_metadata_server_port=%d" % hp,
             "--metrics_port=%d" % xp, "--default_kv_lease_ttl=1000"], stdout=log, stderr=log)]
        try:
            wait_port(self.master)
            wait_port(hp)
            self.procs.append(subprocess.Popen(
                [os.path.join(PKG, "mooncake_client"), "--port=%d" % cp, "--host=127.0.0.1",
                 "--master_server_address=127.0.0.1:%d" % self.master,
                 "--metadata_server=" + self.meta, "--global_segment_size=2GB",
                 "--protocol=tcp"], stdout=log, stderr=log))
            wait_port(cp)
            time.sleep(0.5)
        except BaseException:
            self.close()
            raise

    def uri(self, tmp):
        return "mooncake://127.0.0.1:%d?metadata=%s&log=%s/adapter.log" % (self.master, self.meta,
                                                                          tmp)

    def client(self, buffer_bytes):
        """(store, buffer, address): the wheel's client, with buffer registered."""
        store = MooncakeDistributedStore()
        assert store.setup("127.0.0.1", self.meta, 0, 256 << 20, "tcp", "",
                           "127.0.0.1:%d" % self.master) == 0
        buf = mmap.mmap(-1, buffer_bytes)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        assert store.register_buffer(addr, buffer_bytes) == 0
        return store, buf, addr

    def close(self):
        for p in reversed(self.procs):
            p.kill()
            p.wait()
        self.procs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def raw_zero_copy(store, size, count, buf, addr, src):
    """put_from `count` objects of `size` bytes (src, copied into the registered buf
    first), then get_into each back; the bytes are checked.  (put GB/s, get GB/s)."""
    keys = ["raw-%d-%d" % (size, i) for i in range(count)]
    buf[0:size] = src
    t0 = time.perf_counter()
    for k in keys:
        assert store.put_from(k, addr, size) == 0
    t1 = time.perf_counter()
    for k in keys:
        assert store.get_into(k, addr + size, size) == size
    t2 = time.perf_counter()
    assert buf[size:2 * size] == src
    return size * count / (t1 - t0) / 1e9, size * count / (t2 - t1) / 1e9
