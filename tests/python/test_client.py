"""pinpool.Client against the real daemon: alloc, write, free, info, errors."""
import numpy as np
import pytest

import pinpool

MiB = 1 << 20


def test_alloc_write_free_info(daemon):
    with pinpool.Client(daemon.socket) as c:
        assert c.client_id.startswith("s-")
        s = c.alloc(3 * MiB + 17, tag="py-test")
        assert s.size == 3 * MiB + 17 and s.device_id == pinpool.HOST and s.id > 0
        a = s.as_array(np.uint32)
        a[:] = np.arange(a.size, dtype=np.uint32)
        assert int(a[12345]) == 12345
        mv = memoryview(s.buffer()).cast("B")
        mv[0] = 7
        assert s.as_array()[0] == 7
        info = c.info()
        assert info["used_bytes"] >= 3 * MiB + 17
        assert info["capacity_bytes"] == 256 * MiB and info["chunk_size"] == 16 * MiB
        assert info["host_backend"] == "memfd"
        me = [u for u in info["clients"] if u["client_id"] == c.client_id]
        assert len(me) == 1 and me[0]["slices"] == 1
        assert c.free(s) >= 3 * MiB + 17
        with pytest.raises(pinpool.NotFoundError) as e:
            c.free(s)
        assert isinstance(e.value, ValueError) and e.value.name == "PINPOOL_ENOENT"
        c.ping()
    assert daemon.used() == 0


def test_errors_are_typed_and_explained(daemon):
    with pinpool.Client(daemon.socket) as c:
        with pytest.raises(pinpool.InvalidArgumentError, match="greater than 0"):
            c.alloc(0)
        with pytest.raises(pinpool.InvalidArgumentError) as e:
            c.alloc(1 << 40)
        assert e.value.code == -1002 and "1.00 TiB" in str(e.value)
        with pytest.raises(pinpool.InvalidArgumentError, match="power of two"):
            c.alloc(MiB, alignment=3)
        filler = c.alloc(250 * MiB)
        with pytest.raises(pinpool.OutOfPoolMemoryError, match="largest free extent") as e:
            c.alloc(16 * MiB)
        assert isinstance(e.value, MemoryError)
        c.free(filler)


def test_free_all_and_close_give_everything_back(daemon):
    c = pinpool.Client(daemon.socket)
    for _ in range(4):
        c.alloc(2 * MiB)
    assert c.free_all() == 8 * MiB
    assert daemon.used() == 0
    c.alloc(5 * MiB)
    c.close()
    c.close()  # idempotent
    assert c.closed
    with pytest.raises(pinpool.ConnectError):
        c.alloc(1)
    assert daemon.used(settle_s=2.0) == 0


def test_connect_without_daemon_says_why(tmp_path):
    with pytest.raises(pinpool.ConnectError, match="pinpool serve") as e:
        pinpool.Client(str(tmp_path / "nothing.sock"))
    assert isinstance(e.value, ConnectionError)


def test_kept_slice_attached_by_another_client(daemon):
    with pinpool.Client(daemon.socket) as a:
        s = a.alloc(MiB, tag="py-kept", flags=pinpool.ALLOC_KEEP)
        s.as_array()[:] = 42
    with pinpool.Client(daemon.socket) as b:
        t = b.attach("py-kept")
        assert t.size == MiB and int(t.as_array()[12345]) == 42
        with pytest.raises(pinpool.NotFoundError):
            b.attach("no-such-tag")
        b.detach(t)
        t = b.attach("py-kept")
        assert b.free(t) >= MiB
    assert daemon.used() == 0


def test_device_slice_without_gpu_is_refused(daemon):
    with pinpool.Client(daemon.socket) as c:
        with pytest.raises(pinpool.InvalidArgumentError, match="no device pool"):
            c.alloc(MiB, device_id=0)
