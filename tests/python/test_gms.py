"""--gms: the daemon speaks NVIDIA Dynamo's GPU Memory Service protocol.

The client here is this file's own (GMS's gpu_memory_service package is not on
PyPI and needs CUDA to import): it frames messages as GMS's
common/protocol/wire.py does (a 4-byte big-endian length, one msgpack map whose
"type" is the message's tag, a descriptor by SCM_RIGHTS with a response) and
sends the requests of common/protocol/messages.py.  The daemon runs on the
stand-in driver (tests/mock/libcuda.c), whose exported VMM memory is a memfd:
this process maps the descriptors it receives to check the bytes.
"""
import hashlib
import mmap
import os
import socket
import struct
import threading
import time

import pytest

msgpack = pytest.importorskip("msgpack")

from conftest import Daemon, mock_cuda_dir  # noqa: E402

MiB = 1 << 20
# The stand-in driver's UUID of GPU 0 (bytes 0x50.. with the ordinal last).
UUID0 = "GPU-50515253-5455-5657-5859-5a5b5c5d5e00"


class Gms:
    """One GMS connection."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(10)
        self.s.connect(path)

    def close(self):
        self.s.close()

    def send_raw(self, data):
        self.s.sendall(data)

    def send(self, type_, **fields):
        body = msgpack.packb({"type": type_, **fields}, use_bin_type=True)
        self.s.sendall(struct.pack("!I", len(body)) + body)

    def _exact(self, n, buf=b""):
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise ConnectionResetError("closed")
            buf += chunk
        return buf

    def recv(self):
        """(message, fd or -1)."""
        data, fds, _, _ = socket.recv_fds(self.s, 4, 1)
        if not data:
            raise ConnectionResetError("closed")
        hdr = self._exact(4, data)
        (n,) = struct.unpack("!I", hdr)
        msg = msgpack.unpackb(self._exact(n), raw=False)
        return msg, (fds[0] if fds else -1)

    def call(self, type_, **fields):
        self.send(type_, **fields)
        msg, fd = self.recv()
        if fd >= 0:
            os.close(fd)
        return msg

    def closed(self):
        """True when the daemon ended the connection."""
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True

    def handshake(self, lock, timeout_ms=None):
        fields = {"lock_type": lock}
        if timeout_ms is not None:
            fields["timeout_ms"] = timeout_ms
        return self.call("handshake_request", **fields)


def layout_hash(allocs, metadata):
    """gms.py's _compute_memory_layout_hash: allocations in slot order, then
    metadata by key."""
    h = hashlib.sha256()
    rank = {}
    for r, a in enumerate(sorted(allocs, key=lambda a: a["layout_slot"])):
        rank[a["allocation_id"]] = r
        h.update(f"{r}:{a['size']}:{a['aligned_size']}:{a['tag']}".encode())
    for key in sorted(metadata):
        aid, off, val = metadata[key]
        h.update(f"{key}:{rank[aid]}:{off}:".encode())
        h.update(val)
    return h.hexdigest()


def gms_daemon(*args, **env):
    """A daemon with --gms on the stand-in driver (its host pool on memfds, so
    that this process, without CUDA, can still ask it over gRPC); args: more
    options; env: more of the daemon's environment."""
    mock = mock_cuda_dir()
    env["LD_LIBRARY_PATH"] = str(mock)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        d = Daemon("--host-backend", "memfd", "--gms", "weights,kv_cache", "--devices", "0", *args)
    finally:
        for k, v in old.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
    d.gms_path = os.path.join(d.dir, f"gms_{UUID0}_weights.sock")
    return d


def finish(d):
    assert d.proc.poll() is None, "the daemon died"
    rc = d.stop()
    assert rc == 0, f"the daemon exited with {rc} on SIGTERM; log in {d.log}"


@pytest.fixture
def gms():
    d = gms_daemon()
    yield d
    finish(d)


def fill(path, pattern=b"pinpool-gms!"):
    """A writer: two allocations (the first written through its exported fd),
    three metadata keys, commit.  Returns (allocations, metadata)."""
    w = Gms(path)
    hs = w.handshake("rw")
    assert hs == {"type": "handshake_response", "success": True, "committed": False,
                  "granted_lock_type": "rw"}
    a = w.call("allocate_request", size=5 * MiB + 8, tag="weights")
    assert a["type"] == "allocate_response"
    assert a["size"] == 5 * MiB + 8 and a["aligned_size"] == 6 * MiB  # 2 MiB granules
    b = w.call("allocate_request", size=2 * MiB)  # tag defaults to "default"
    w.send("export_allocation_request", allocation_id=a["allocation_id"])
    ex, fd = w.recv()
    assert ex["type"] == "export_allocation_response" and fd >= 0, ex
    assert ex["tag"] == "weights" and ex["aligned_size"] == 6 * MiB
    with mmap.mmap(fd, 6 * MiB) as m:
        m[0:len(pattern)] = pattern
        m[6 * MiB - len(pattern):] = pattern
    os.close(fd)
    meta = {"model.layer0.weight": (a["allocation_id"], 0, b"\x00\x01shape=[4,4]"),
            "model.layer1.weight": (a["allocation_id"], 4096, b"dtype=bf16"),
            "other.bias": (b["allocation_id"], 0, b"")}
    for key, (aid, off, val) in meta.items():
        r = w.call("metadata_put_request", key=key, allocation_id=aid, offset_bytes=off, value=val)
        assert r == {"type": "metadata_put_response", "success": True}, r
    allocs = w.call("list_allocations_request")["allocations"]
    assert [x["allocation_id"] for x in allocs] == [a["allocation_id"], b["allocation_id"]]
    r = w.call("commit_request")
    assert r == {"type": "commit_response", "success": True}
    assert w.closed(), "GMS ends the writer's connection at its commit"
    w.close()
    return allocs, meta


def test_writer_commits_readers_see_layout_metadata_and_bytes(gms):
    allocs, meta = fill(gms.gms_path)
    readers = [Gms(gms.gms_path) for _ in range(2)]
    for r in readers:
        hs = r.handshake("ro", timeout_ms=1000)
        assert hs == {"type": "handshake_response", "success": True, "committed": True,
                      "granted_lock_type": "ro"}
    r = readers[0]
    st = r.call("get_lock_state_request")
    assert st["state"] == "RO" and st["ro_session_count"] == 2 and st["committed"]
    assert not st["has_rw_session"] and st["is_ready"]
    h = r.call("get_memory_layout_hash_request")["memory_layout_hash"]
    assert h == layout_hash(allocs, meta), "not the hash GMS computes for this layout"
    assert readers[1].call("get_memory_layout_hash_request")["memory_layout_hash"] == h
    assert r.call("metadata_list_request", prefix="model.")["keys"] == [
        "model.layer0.weight", "model.layer1.weight"]
    assert r.call("metadata_list_request")["keys"] == sorted(meta)
    got = r.call("metadata_get_request", key="model.layer1.weight")
    assert got == {"type": "metadata_get_response", "found": True,
                   "allocation_id": allocs[0]["allocation_id"], "offset_bytes": 4096,
                   "value": b"dtype=bf16"}
    assert r.call("metadata_get_request", key="nope")["found"] is False
    assert r.call("get_allocation_state_request")["allocation_count"] == 2
    one = r.call("get_allocation_request", allocation_id=allocs[1]["allocation_id"])
    assert one["type"] == "get_allocation_response" and one["tag"] == "default"
    assert r.call("list_allocations_request", tag="weights")["allocations"] == [allocs[0]]
    # the reader's descriptor is the same memory the writer wrote
    r.send("export_allocation_request", allocation_id=allocs[0]["allocation_id"])
    ex, fd = r.recv()
    assert fd >= 0
    with mmap.mmap(fd, 6 * MiB, prot=mmap.PROT_READ) as m:
        assert m[0:12] == b"pinpool-gms!" and m[6 * MiB - 12:] == b"pinpool-gms!"
    os.close(fd)
    # a reader may not change the layout; the connection goes on
    for req, f in [("allocate_request", {"size": MiB}),
                   ("free_allocation_request", {"allocation_id": allocs[0]["allocation_id"]}),
                   ("metadata_put_request", {"key": "k", "allocation_id": allocs[0]["allocation_id"],
                                             "offset_bytes": 0, "value": b"x"}),
                   ("metadata_delete_request", {"key": "other.bias"}),
                   ("commit_request", {})]:
        e = r.call(req, **f)
        assert e["type"] == "error_response" and "requires RW session" in e["error"], e
    assert r.call("get_allocation_state_request")["allocation_count"] == 2
    # no writer while readers hold the store
    w = Gms(gms.gms_path)
    assert w.handshake("rw", timeout_ms=100)["success"] is False
    for x in readers:
        x.close()
    # the last reader gone, a writer gets it and empties it (RW replaces the layout)
    w = Gms(gms.gms_path)
    deadline = time.monotonic() + 5
    while True:
        hs = w.handshake("rw", timeout_ms=2000)
        if hs["success"] or time.monotonic() > deadline:
            break
        w = Gms(gms.gms_path)
    assert hs["success"] and hs["granted_lock_type"] == "rw"
    assert w.call("get_allocation_state_request")["allocation_count"] == 0
    assert w.call("get_memory_layout_hash_request")["memory_layout_hash"] == ""
    w.close()


def test_one_writer_at_a_time_and_readers_wait_for_commit(gms):
    a = Gms(gms.gms_path)
    assert a.handshake("rw")["granted_lock_type"] == "rw"
    aid = a.call("allocate_request", size=MiB)["allocation_id"]
    # a second writer waits; with timeout_ms it is told success=false
    b = Gms(gms.gms_path)
    t0 = time.monotonic()
    hs = b.handshake("rw", timeout_ms=300)
    assert hs["success"] is False and hs["committed"] is False
    assert time.monotonic() - t0 >= 0.25
    assert b.closed()
    # a reader waits for a commit
    r = Gms(gms.gms_path)
    assert r.handshake("ro", timeout_ms=100)["success"] is False
    # rw_or_ro on an uncommitted store held by a writer: waits too
    assert Gms(gms.gms_path).handshake("rw_or_ro", timeout_ms=100)["success"] is False
    # a writer that waits without a timeout gets the lock when the first hangs up
    got = {}
    c = Gms(gms.gms_path)

    def wait_rw():
        got["hs"] = c.handshake("rw")

    t = threading.Thread(target=wait_rw)
    t.start()
    time.sleep(0.2)
    st = a.call("get_lock_state_request")
    assert st["waiting_writers"] == 1 and st["has_rw_session"], st
    a.close()  # without a commit: its allocations go
    t.join(10)
    assert got["hs"]["success"] and got["hs"]["granted_lock_type"] == "rw"
    assert c.call("get_allocation_state_request")["allocation_count"] == 0
    e = c.call("export_allocation_request", allocation_id=aid)
    assert e["type"] == "error_response" and "Unknown allocation" in e["error"]
    # rw_or_ro on a committed store is a reader
    c.call("allocate_request", size=MiB)
    assert c.call("commit_request")["success"]
    hs = Gms(gms.gms_path).handshake("rw_or_ro")
    assert hs["granted_lock_type"] == "ro" and hs["committed"] is True


def test_tags_are_separate_stores(gms):
    kv = os.path.join(gms.dir, f"gms_{UUID0}_kv_cache.sock")
    w = Gms(gms.gms_path)
    assert w.handshake("rw")["success"]
    w.call("allocate_request", size=MiB)
    k = Gms(kv)
    assert k.handshake("rw")["success"], "the kv_cache store has its own writer"
    assert k.call("get_allocation_state_request")["allocation_count"] == 0


def test_free_drops_its_metadata(gms):
    w = Gms(gms.gms_path)
    w.handshake("rw")
    aid = w.call("allocate_request", size=MiB)["allocation_id"]
    w.call("metadata_put_request", key="k", allocation_id=aid, offset_bytes=0, value=b"v")
    e = w.call("metadata_put_request", key="k2", allocation_id=aid, offset_bytes=2 * MiB,
               value=b"v")
    assert e["type"] == "error_response" and "out of range" in e["error"], e
    assert w.call("free_allocation_request", allocation_id=aid) == {
        "type": "free_allocation_response", "success": True}
    assert w.call("free_allocation_request", allocation_id=aid)["success"] is False
    assert w.call("metadata_list_request")["keys"] == []
    assert w.call("metadata_delete_request", key="k")["deleted"] is False


def alive(d):
    """The daemon answers GMS and gRPC and still runs."""
    assert d.proc.poll() is None
    g = Gms(d.gms_path)
    st = g.call("get_runtime_state_request")
    assert st["type"] == "get_runtime_state_response"
    g.close()
    d.info()


@pytest.mark.parametrize("frame,why", [
    (struct.pack("!I", 0xFFFFFFFF), "frame of 4294967295 bytes"),
    (struct.pack("!I", 0), "frame of 0 bytes"),
    (struct.pack("!I", 3) + b"\xc1\xc1\xc1", "Expected a msgpack map"),
    # a map whose value is an array of four billion elements in a 10-byte frame
    (struct.pack("!I", 12) + b"\x81\xa4type\xdd\xff\xff\xff\xff\x00\x00", "truncated, nested"),
    (struct.pack("!I", 5) + b"\x81\x01\x02\x03\x04", "not named by a str"),
    (struct.pack("!I", 2) + b"\x80\xc0", "bytes after the map"),
])
def test_malformed_frames_are_answered_and_end_the_connection(gms, frame, why):
    g = Gms(gms.gms_path)
    g.send_raw(frame)
    msg, _ = g.recv()
    assert msg["type"] == "error_response" and why in msg["error"], msg
    assert g.closed()
    alive(gms)


def test_bad_messages(gms):
    cases = [({"type": "no_such_request"}, "Invalid value 'no_such_request'"),
             ({"lock_type": "rw"}, "missing required field `type`"),
             ({"type": "handshake_request"}, "missing required field `lock_type`"),
             ({"type": "handshake_request", "lock_type": "rwx"}, "expected one of"),
             ({"type": "handshake_request", "lock_type": 7}, "lock_type: expected `str`"),
             ({"type": "allocate_request", "size": 1}, "Expected HandshakeRequest")]
    for m, why in cases:
        g = Gms(gms.gms_path)
        body = msgpack.packb(m)
        g.send_raw(struct.pack("!I", len(body)) + body)
        msg, _ = g.recv()
        assert msg["type"] == "error_response" and why in msg["error"], (m, msg)
        assert g.closed()
    w = Gms(gms.gms_path)
    w.handshake("rw")
    for m, why in [({"size": "big"}, "size: expected `int`"), ({"size": -1}, "size must be >= 0"),
                   ({"size": 0}, "size must be > 0"), ({"size": 1, "tag": "t" * 65}, "longer than 64")]:
        body = msgpack.packb({"type": "allocate_request", **m})
        w.send_raw(struct.pack("!I", len(body)) + body)
        msg, _ = w.recv()
        assert msg["type"] == "error_response" and why in msg["error"], (m, msg)
        if "expected" in why or ">= 0" in why or "longer" in why:
            assert w.closed()  # a frame that does not decode ends the connection
            w = Gms(gms.gms_path)
            assert w.handshake("rw", timeout_ms=2000)["success"]
    e = w.call("metadata_put_request", key="k", allocation_id="nope", offset_bytes=0, value=b"")
    assert "Unknown allocation: nope" in e["error"]
    e = w.call("handshake_request", lock_type="ro")
    assert "not allowed for RW session" in e["error"]
    assert w.call("get_allocation_state_request")["allocation_count"] == 0
    alive(gms)


def test_a_client_that_stops_mid_frame_stalls_nobody(gms):
    stuck = [Gms(gms.gms_path) for _ in range(3)]
    stuck[0].send_raw(b"\x00\x00")  # half a header
    stuck[1].send_raw(struct.pack("!I", 1000) + b"\x81")  # a frame that never ends
    body = msgpack.packb({"type": "handshake_request", "lock_type": "rw"})
    stuck[2].send_raw(struct.pack("!I", len(body)) + body[:5])
    t0 = time.monotonic()
    allocs, meta = fill(gms.gms_path)
    r = Gms(gms.gms_path)
    assert r.handshake("ro")["success"]
    assert r.call("get_memory_layout_hash_request")["memory_layout_hash"] == layout_hash(allocs, meta)
    assert time.monotonic() - t0 < 5
    for s in stuck:  # hanging up mid-frame costs nothing
        s.close()
    alive(gms)


def test_a_peer_that_does_not_read_its_replies(gms):
    w = Gms(gms.gms_path)
    w.handshake("rw")
    aid = w.call("allocate_request", size=MiB)["allocation_id"]
    for i in range(300):
        w.call("metadata_put_request", key=f"k{i:04d}" + "x" * 900, allocation_id=aid,
               offset_bytes=0, value=b"v" * 1000)
    w.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    body = msgpack.packb({"type": "metadata_list_request"})
    for _ in range(20):  # ~300 KB of replies each, none read
        w.send_raw(struct.pack("!I", len(body)) + body)
    alive(gms)
    w.close()
    alive(gms)


def as_nobody(path, steps):
    """Connect as uid 65534 and send steps [(lock) for a handshake, or (type,
    fields)]; the answers as a list of dicts (from a child process)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            g = Gms(path)
            out = []
            for lock in steps:
                out.append(g.handshake(lock, timeout_ms=200))
            os.write(w, msgpack.packb(out))
        except Exception as e:  # noqa: BLE001 - reported to the parent
            os.write(w, msgpack.packb([{"exception": repr(e)}]))
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return msgpack.unpackb(data)


def open_to_all(d):
    os.chmod(d.dir, 0o711)
    for name in os.listdir(d.dir):
        if name.startswith("gms_"):
            os.chmod(os.path.join(d.dir, name), 0o666)


def test_another_uid_is_refused_by_allow_uid():
    if os.geteuid() != 0:
        pytest.skip("needs root to become another uid")
    d = gms_daemon("--allow-uid", "0")
    try:
        open_to_all(d)
        out = as_nobody(d.gms_path, ["rw"])
        # the daemon's admission refuses it before any lock
        assert out[0]["type"] == "error_response", out
        assert "65534" in out[0]["error"] and "held by" not in out[0]["error"], out
        w = Gms(d.gms_path)
        assert w.handshake("rw")["success"], "root's writer is let in"
    finally:
        finish(d)


def test_another_uid_may_neither_read_nor_replace_a_layout():
    if os.geteuid() != 0:
        pytest.skip("needs root to become another uid")
    d = gms_daemon("--allow-uid", "0,65534")
    try:
        open_to_all(d)
        allocs, meta = fill(d.gms_path)
        for lock in ("ro", "rw", "rw_or_ro"):
            out = as_nobody(d.gms_path, [lock])
            assert out[0]["type"] == "error_response", (lock, out)
            assert "held by another user" in out[0]["error"], out
        # root's layout is intact
        r = Gms(d.gms_path)
        assert r.handshake("ro")["success"]
        assert r.call("get_memory_layout_hash_request")["memory_layout_hash"] == \
            layout_hash(allocs, meta)
        r.close()
        # once a writer of root's emptied it (and hung up), another uid may fill it
        w = Gms(d.gms_path)
        assert w.handshake("rw", timeout_ms=2000)["success"]
        w.close()
        time.sleep(0.2)
        out = as_nobody(d.gms_path, ["rw"])
        assert out[0].get("granted_lock_type") == "rw", out
    finally:
        finish(d)


def test_out_of_device_memory_is_an_error_response():
    d = gms_daemon(PINPOOL_MOCK_FAIL="cuMemCreate")  # its next cuMemCreate fails
    try:
        w = Gms(d.gms_path)
        w.handshake("rw")
        e = w.call("allocate_request", size=3 * MiB)
        assert e["type"] == "error_response", e
        assert "cannot make 3145728 bytes on GPU 0" in e["error"] and "cuMemCreate" in e["error"], e
        a = w.call("allocate_request", size=3 * MiB)  # the next one works
        assert a["type"] == "allocate_response" and a["aligned_size"] == 4 * MiB
        assert w.call("get_allocation_state_request")["allocation_count"] == 1
    finally:
        finish(d)


def test_earlier_gms_names(gms):
    """The earlier messages.py's export_request, free_request and clear_all_request,
    answered as that GMS answered them (and total_bytes, which it required)."""
    w = Gms(gms.gms_path)
    w.handshake("rw")
    a = w.call("allocate_request", size=MiB)
    b = w.call("allocate_request", size=3 * MiB)
    w.send("export_request", allocation_id=a["allocation_id"])
    ex, fd = w.recv()
    assert ex["type"] == "get_allocation_response" and fd >= 0, ex
    os.close(fd)
    st = w.call("get_allocation_state_request")
    assert st["allocation_count"] == 2 and st["total_bytes"] == 6 * MiB, st
    assert w.call("free_request", allocation_id=a["allocation_id"]) == {
        "type": "free_response", "success": True}
    w.call("metadata_put_request", key="k", allocation_id=b["allocation_id"], offset_bytes=0,
           value=b"v")
    assert w.call("clear_all_request") == {"type": "clear_all_response", "cleared_count": 1}
    assert w.call("metadata_list_request")["keys"] == []
    assert w.call("get_allocation_state_request")["total_bytes"] == 0
    # still the writer: it may fill the store again and commit
    w.call("allocate_request", size=MiB)
    assert w.call("commit_request")["success"]
    r = Gms(gms.gms_path)
    assert r.handshake("ro")["success"]
    e = r.call("clear_all_request")
    assert "requires RW session" in e["error"]


def test_a_waiter_that_hangs_up_leaves_the_queue(gms):
    w = Gms(gms.gms_path)
    w.handshake("rw")
    w.call("allocate_request", size=MiB)
    dead = Gms(gms.gms_path)
    dead.send("handshake_request", lock_type="rw")  # waits, without a timeout
    time.sleep(0.2)
    assert w.call("get_lock_state_request")["waiting_writers"] == 1
    dead.close()
    deadline = time.monotonic() + 5
    while w.call("get_lock_state_request")["waiting_writers"] != 0:
        assert time.monotonic() < deadline, "a dead waiter stays in the queue"
        time.sleep(0.02)
    assert w.call("commit_request")["success"]
    # no dead writer takes the lock (and empties the store) before readers
    r = Gms(gms.gms_path)
    hs = r.handshake("ro", timeout_ms=2000)
    assert hs["success"], hs
    assert r.call("get_allocation_state_request")["allocation_count"] == 1
