"""pinpool.ServerPinnedMemoryPool: lpllm PinnedMemoryPool semantics, numpy flavour
(torch is not installed on the CI machine; the torch paths are the same calls)."""
import threading

import numpy as np
import pytest

import pinpool

MiB = 1 << 20


@pytest.fixture
def pool(daemon):
    with pinpool.ServerPinnedMemoryPool(dtype=np.float16, pool_size=0.125, socket=daemon.socket,
                                        lease_mb=8) as p:
        yield p


def test_alloc_is_a_1d_block_of_the_pool_dtype(pool):
    b = pool.alloc(1001)  # rounds up to whole elements, as the old pool did
    assert b.dtype == np.float16 and b.ndim == 1 and b.shape == (501,)
    b[:] = 1.5
    assert float(b.sum()) == 1.5 * 501
    assert b.ctypes.data % 256 == 0
    pool.free(b)


def test_alloc_same_pin_tensor_has_the_shape_and_the_pool_dtype(pool):
    like = np.zeros((3, 5, 7), dtype=np.float32)
    t = pool.alloc_same_pin_tensor(like)
    assert t.shape == (3, 5, 7) and t.dtype == np.float16
    t[...] = np.arange(105, dtype=np.float16).reshape(3, 5, 7)
    assert float(t[2, 4, 6]) == 104.0
    pool.free(t)  # a reshaped view frees its block
    assert pool.get_usage_info()["allocated_mb"] == 0


def test_size_errors(pool):
    with pytest.raises(ValueError):
        pool.alloc(0)
    with pytest.raises(ValueError):
        pool.alloc(-5)
    with pytest.raises(MemoryError):
        pool.alloc(129 * MiB)  # more than pool_size (128 MiB)
    blocks = [pool.alloc(8 * MiB) for _ in range(16)]  # the whole pool_size
    with pytest.raises(MemoryError):
        pool.alloc(1)
    for b in blocks:
        pool.free(b)
    pool.free(pool.alloc(1))


def test_memory_error_when_the_daemon_is_full(daemon):
    with pinpool.ServerPinnedMemoryPool(dtype=np.uint8, pool_size=1, socket=daemon.socket,
                                        lease_mb=64) as p:
        blocks = [p.alloc(64 * MiB) for _ in range(4)]  # 256 MiB: the daemon's whole pool
        with pytest.raises(MemoryError, match="largest free extent"):
            p.alloc(4096)
        for b in blocks:
            p.free(b)


def test_free_of_anything_but_a_live_block_raises(daemon, pool):
    b = pool.alloc(4096)
    with pytest.raises(ValueError, match="not a live block"):
        pool.free(b[8:])  # inside a block
    with pytest.raises(ValueError, match="not a block of this arena"):
        pool.free(np.zeros(16, dtype=np.float16))  # ordinary memory
    with pinpool.ServerPinnedMemoryPool(dtype=np.float16, pool_size=0.0625,
                                        socket=daemon.socket, lease_mb=4) as other:
        ob = other.alloc(64)
        with pytest.raises(pinpool.NotFoundError):
            pool.free(ob)  # another pool's
        other.free(ob)
    with pytest.raises(TypeError):
        pool.free("not an array")
    pool.free(b)
    with pytest.raises(ValueError):
        pool.free(b)  # double free


def test_usage_info(pool):
    info = pool.get_usage_info()
    assert info["total_gb"] == 0.125
    assert info["allocated_mb"] == 0 and info["free_mb"] == 128
    blocks = [pool.alloc(MiB) for _ in range(3)]
    pool.free(blocks[1])
    info = pool.get_usage_info()
    assert info["allocated_mb"] == 2
    assert info["free_mb"] == 126
    assert info["fragmentation"] == 2  # free extents: the hole, and the lease's rest
    assert 0 < info["fragmentation_ratio"] < 1
    assert info["leased_mb"] == 8 and info["num_leases"] == 1 and info["num_blocks"] == 2
    for b in (blocks[0], blocks[2]):
        pool.free(b)
    assert pool.get_usage_info()["fragmentation"] == 1


def test_usage_info_comes_from_the_daemon(daemon):
    """A pool may ask for more than the daemon has: what it reports is what the
    daemon (256 MiB here) and its own leases can give, not pool_size."""
    with pinpool.ServerPinnedMemoryPool(dtype=np.uint8, pool_size=2, socket=daemon.socket,
                                        lease_mb=8) as p:
        info = p.get_usage_info()
        assert info["total_gb"] == 0.25, "capped by the daemon's capacity"
        assert info["free_mb"] == 256, "8 MiB free in its lease + the daemon's other 248 MiB"
        with pinpool.Client(daemon.socket) as other:
            s = other.alloc(100 * MiB)
            b = p.alloc(3 * MiB)
            info = p.get_usage_info()
            assert info["allocated_mb"] == 3
            assert info["free_mb"] == 256 - 100 - 3, "another client's slice is not free"
            p.free(b)
            other.free(s)


@pytest.mark.parametrize("pool_size", [1e-9, 0.001, 0.01, 0.05, 0.1])
def test_any_positive_pool_size_works(daemon, pool_size):
    """Small pools lease smaller: one lease of the whole pool, in whole 4 KiB pages
    (at least one page)."""
    with pinpool.ServerPinnedMemoryPool(dtype=np.uint8, pool_size=pool_size,
                                        socket=daemon.socket) as p:
        assert 4096 <= p.lease_size <= max(p.max_bytes, 4096)
        assert p.lease_size % 4096 == 0
        assert p.lease_size == min(64 * MiB, p.max_bytes // 4096 * 4096) or p.lease_size == 4096
        b = p.alloc(p.lease_size)  # a block as large as the lease fits it
        b[:] = 7
        assert int(b[-1]) == 7
        with pytest.raises(MemoryError):
            p.alloc(p.max_bytes + 1)
        p.free(b)
        assert p.get_usage_info()["allocated_mb"] == 0
        assert p.get_usage_info()["leased_mb"] * MiB == p.lease_size


def test_pool_size_must_be_positive(daemon):
    for bad in (0, -1):
        with pytest.raises(ValueError, match="pool_size"):
            pinpool.ServerPinnedMemoryPool(dtype=np.uint8, pool_size=bad, socket=daemon.socket)


def test_no_rpc_per_block(daemon, pool):
    before = daemon.info()
    for _ in range(2000):
        pool.free(pool.alloc(4096))
    keep = [pool.alloc(100_000) for _ in range(20)]
    after = daemon.info()
    assert after["num_slices"] == before["num_slices"] == 1, "one lease, no slice per block"
    assert after["used_bytes"] == before["used_bytes"] == 8 * MiB
    for b in keep:
        pool.free(b)
    st = pool.stats()
    assert st["allocs"] == st["frees"] == 2020


def test_blocks_larger_than_a_lease(daemon, pool):
    big = pool.alloc(40 * MiB)  # lease_mb is 8: a lease of its own, over 3 daemon chunks
    big[:] = 3.0
    assert float(big[-1]) == 3.0 and big.size == 20 * MiB
    assert pool.get_usage_info()["leased_mb"] == 48
    pool.free(big)
    assert pool.get_usage_info()["leased_mb"] == 8
    assert daemon.used() == 8 * MiB


def test_close_returns_the_memory_and_later_calls_raise(daemon):
    p = pinpool.ServerPinnedMemoryPool(dtype=np.float32, pool_size=0.0625, socket=daemon.socket)
    p.alloc(MiB)
    assert daemon.used() > 0
    p.close()
    p.close()
    assert p.closed
    assert daemon.used(settle_s=2.0) == 0
    with pytest.raises(ValueError, match="closed"):
        p.alloc(16)


def test_shares_a_client(daemon):
    with pinpool.Client(daemon.socket) as c:
        with pinpool.ServerPinnedMemoryPool(dtype=np.int32, pool_size=0.0625, client=c) as p:
            b = p.alloc(64)
            assert b.dtype == np.int32
            p.free(b)
        assert not c.closed, "a client given to the pool stays open"
        assert c.info()["used_bytes"] == 0


def test_three_threads_10000_alloc_free_with_data_checks(pool):
    errors = []

    def work(me):
        rng = np.random.default_rng(me)
        live = []
        try:
            for i in range(10_000):
                size = int(rng.integers(2, 64 * 1024))
                b = pool.alloc(size)
                val = np.float16(me * 100 + i % 50)
                b[:] = val
                live.append((b, val))
                if len(live) > 5 or i == 9_999:
                    while live:
                        blk, v = live.pop()
                        if not (blk == v).all():
                            errors.append(f"thread {me}: block overwritten")
                        pool.free(blk)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"thread {me}: {e!r}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(1, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    st = pool.stats()
    assert st["allocs"] == st["frees"] == 30_000 and st["num_blocks"] == 0
