"""Named objects and release/acquire from Python, against the real daemon."""
import ctypes

import pytest

import pinpool


def test_put_get_exists_remove(daemon):
    with pinpool.Client(daemon.socket) as c:
        c.put("a", b"hello")
        assert c.exists("a")
        assert c.get("a") == b"hello"
        assert c.batch_get(["a", "missing"]) == [b"hello", None]
        c.remove("a")
        assert not c.exists("a")
        with pytest.raises(pinpool.NotFoundError):
            c.get("a")


def test_release_spill_acquire(daemon):
    with pinpool.Client(daemon.socket) as c:
        mib = 1 << 20
        slices = []
        for i in range(20):  # 20 x 12 MiB released into a 256 MiB pool of 16 MiB chunks
            s = c.alloc(12 * mib)
            ctypes.memmove(s.ptr, bytes([i]) * (12 * mib), 12 * mib)
            c.release(s, "py-%d" % i)
        used = [c.alloc(12 * mib) for _ in range(16)]  # forces spills
        info = c.info()["spill"]
        assert info["spills"] >= 16
        assert info["tier"] == "file"
        for u in used:
            c.free(u)
        for i in range(20):
            s = c.acquire("py-%d" % i)
            assert ctypes.string_at(s.ptr, 12 * mib) == bytes([i]) * (12 * mib)
            c.free(s)
        assert c.info()["used_bytes"] == 0
