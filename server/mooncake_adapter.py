#!/usr/bin/env python3
"""mooncake_adapter.py - the Mooncake spill tier's helper process.

The daemon (server/tier_mooncake_adapter.c) starts this with one end of a unix
SOCK_SEQPACKET socket pair as fd 3.  Commands arrive on that socket; payload
bytes never do: they lie in a shared staging buffer (a memfd the daemon sends
with SCM_RIGHTS), which this process maps and registers with Mooncake, so
Mooncake's transfer engine reads and writes them in place (put_from/get_into).

Why a process: the PyPI wheel of Mooncake exports no C API (store_c.h's
mooncake_store_* symbols are absent from its libraries), only this Python
client; running it here also keeps Mooncake's signal handlers (SIGINT, SIGTERM,
SIGHUP) and threads out of the daemon.

Owns: one MooncakeDistributedStore client and the mapping of the staging buffer.
Never: writes to stdout (the daemon does not read it), or outlives the daemon
(EOF on fd 3 ends it; the daemon also sets PR_SET_PDEATHSIG).

Wire format (native little endian; tier_mooncake_adapter.c has the same table):
  request  = <HHIQ op flags n seq> then per op:
     HELLO   JSON config (utf-8)
     SETBUF  <Q size>, the memfd attached
     others  n items of <QQI off len keylen> + key bytes
  reply    = <QiI seq status n> + n items of <qq rc aux> + message (utf-8)
Ops: PUT (create or replace: upsert), GET (into off, len bytes; rc = size or a
Mooncake error, aux = the object's size when the room was short), EXISTS,
SIZE, REMOVE (flags & 1: force, skipping Mooncake's read lease).
Every put carries one ReplicateConfig made at HELLO from the tier's URI:
replicas (replica_num), soft_pin (soft_pin_action ENABLE; with_soft_pin on
older wheels), hard_pin (with_hard_pin), prefer_local (preferred_segment:
this process's own segment, or local_segment; the wheel's client refuses
prefer_alloc_in_same_node on every put).  HELLO's reply message is
"upsert" or "remove+put", then "|" and the preferred segment.
"""
import json
import mmap
import os
import signal
import socket
import struct
import sys

OP_HELLO, OP_SETBUF, OP_PUT, OP_GET, OP_EXISTS, OP_SIZE, OP_REMOVE = range(1, 8)
REQ = struct.Struct("<HHIQ")
ITEM = struct.Struct("<QQI")
REP = struct.Struct("<QiI")
RES = struct.Struct("<qq")
INVALID_PARAMS = -600


def log(msg):
    sys.stderr.write("mooncake_adapter[%d]: %s\n" % (os.getpid(), msg))
    sys.stderr.flush()


class Adapter:
    def __init__(self, sock):
        self.sock = sock
        self.store = None
        self.map = None
        self.addr = 0
        self.size = 0
        self.has_upsert = False
        self.config = None  # the ReplicateConfig of every put

    def reply(self, seq, status, results=(), msg=""):
        out = [REP.pack(seq, status, len(results))]
        out += [RES.pack(rc, aux) for rc, aux in results]
        out.append(msg.encode("utf-8", "replace")[:4096])
        self.sock.sendmsg([b"".join(out)])

    def hello(self, body):
        cfg = json.loads(body.decode("utf-8"))
        from mooncake.store import MooncakeDistributedStore  # late: errors reach the daemon

        store = MooncakeDistributedStore()
        rc = store.setup(cfg["local_hostname"], cfg["metadata_server"], int(cfg["segment"]),
                         int(cfg["local_buffer"]), cfg["protocol"], cfg.get("device", ""),
                         cfg["master"])
        if rc != 0:
            return rc, "MooncakeDistributedStore.setup(master %s, metadata %s) returned %d" % (
                cfg["master"], cfg["metadata_server"], rc)
        self.store = store
        self.has_upsert = hasattr(store, "batch_upsert_from") and hasattr(store, "upsert_from")
        rc, why, preferred = self.placement(cfg)
        if rc != 0:
            return rc, why
        return 0, ("upsert" if self.has_upsert else "remove+put") + "|" + preferred

    def placement(self, cfg):
        """The ReplicateConfig of every put: (0, "", preferred segment) or (rc, why, "")."""
        from mooncake.store import ReplicateConfig
        c = ReplicateConfig()
        c.replica_num = int(cfg.get("replicas", 1))
        if cfg.get("soft_pin"):
            if hasattr(c, "with_soft_pin"):
                c.with_soft_pin = True
            elif hasattr(c, "soft_pin_action"):
                from mooncake.store import SoftPinAction
                c.soft_pin_action = SoftPinAction.ENABLE
            else:
                return -600, "soft_pin=1: this Mooncake has neither with_soft_pin nor " \
                    "soft_pin_action in ReplicateConfig", ""
        if cfg.get("hard_pin"):
            if not hasattr(c, "with_hard_pin"):
                return -600, "hard_pin=1: this Mooncake's ReplicateConfig has no with_hard_pin", ""
            c.with_hard_pin = True
        preferred = ""
        if cfg.get("prefer_local"):
            preferred = cfg.get("local_segment") or ""
            if not preferred and int(cfg["segment"]) > 0:
                preferred = self.store.get_hostname()  # the segment this client mounted
            if not preferred:
                return -600, "prefer_local=1 needs a segment on this node: segment=SIZE (this " \
                    "client's own) or local_segment=HOST:PORT (a mooncake_client here); " \
                    "Mooncake's own prefer_alloc_in_same_node is refused by its Python " \
                    "client on every put", ""
            c.preferred_segment = preferred
        self.config = c
        return 0, "", preferred

    def setbuf(self, size, fds):
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            return -22, "SETBUF needs exactly one descriptor"
        fd = fds[0]
        try:
            new = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        import ctypes
        addr = ctypes.addressof(ctypes.c_char.from_buffer(new))
        rc = self.store.register_buffer(addr, size)
        if rc != 0:
            new.close()
            return rc, "register_buffer(%d bytes) returned %d" % (size, rc)
        if self.map is not None:
            self.store.unregister_buffer(self.addr)
            # ctypes keeps an export of the old map alive; let it go with the object
            self.map = None
        self.map, self.addr, self.size = new, addr, size
        return 0, ""

    def items(self, body, n):
        out, pos = [], 0
        for _ in range(n):
            off, length, klen = ITEM.unpack_from(body, pos)
            pos += ITEM.size
            key = body[pos:pos + klen].decode("latin-1")
            pos += klen
            if off + length > self.size:
                raise ValueError("item outside the staging buffer")
            out.append((key, self.addr + off, length))
        return out

    def run_op(self, op, flags, items):
        s = self.store
        keys = [k for k, _, _ in items]
        ptrs = [p for _, p, _ in items]
        lens = [n for _, _, n in items]
        if op == OP_PUT:
            c = self.config
            if self.has_upsert:
                rcs = (s.batch_upsert_from(keys, ptrs, lens, c) if len(items) > 1
                       else [s.upsert_from(keys[0], ptrs[0], lens[0], c)])
            else:  # put on an existing key is a no-op: remove first
                rcs = []
                for k, p, n in items:
                    rc = s.remove(k, bool(flags & 1))
                    rcs.append(rc if rc not in (0, -704) else s.put_from(k, p, n, c))
            return [(rc, 0) for rc in rcs]
        if op == OP_GET:
            rcs = (s.batch_get_into(keys, ptrs, lens) if len(items) > 1
                   else [s.get_into(keys[0], ptrs[0], lens[0])])
            out = []
            for k, rc in zip(keys, rcs):
                aux = s.get_size(k) if rc == INVALID_PARAMS else 0
                out.append((rc, aux))
            return out
        if op == OP_EXISTS:
            rcs = s.batch_is_exist(keys) if len(items) > 1 else [s.is_exist(keys[0])]
            return [(rc, 0) for rc in rcs]
        if op == OP_SIZE:
            return [(s.get_size(k), 0) for k in keys]
        if op == OP_REMOVE:
            force = bool(flags & 1)
            rcs = s.batch_remove(keys, force) if len(items) > 1 else [s.remove(keys[0], force)]
            return [(rc, 0) for rc in rcs]
        raise ValueError("unknown op %d" % op)

    def serve(self):
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, 1 << 20, 4)
            except (ConnectionResetError, OSError):
                return
            if not data:
                return
            op, flags, n, seq = REQ.unpack_from(data, 0)
            body = data[REQ.size:]
            try:
                if op == OP_HELLO:
                    rc, msg = self.hello(body)
                    self.reply(seq, rc, (), msg)
                elif self.store is None:
                    self.reply(seq, -22, (), "no HELLO yet")
                elif op == OP_SETBUF:
                    rc, msg = self.setbuf(struct.unpack_from("<Q", body, 0)[0], fds)
                    self.reply(seq, rc, (), msg)
                else:
                    self.reply(seq, 0, self.run_op(op, flags, self.items(body, n)))
            except Exception as e:  # report, keep serving
                for fd in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                self.reply(seq, -5, (), "%s: %s" % (type(e).__name__, e))


def main():
    # The daemon decides when this ends (EOF on fd 3), not the terminal.
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    sock = socket.socket(fileno=3)
    adapter = Adapter(sock)
    adapter.serve()
    if adapter.store is not None:
        # close() tells the master this client is gone; with an etcd master
        # entry it can take 30 s (its watch), so it gets 1 s, then we go.
        import threading
        def close():
            try:
                adapter.store.close()
            except Exception:
                pass
        t = threading.Thread(target=close, daemon=True)
        t.start()
        t.join(1.0)
    os._exit(0)  # skip interpreter teardown of Mooncake's threads


if __name__ == "__main__":
    main()
