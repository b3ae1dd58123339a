"""Child-process bodies for test_processes.py (spawned: they must be importable)."""
import os

MiB = 1 << 20


def client_process(socket, me, results, barrier):
    """Fill pool blocks and one plain slice with byte `me`, report where the slice
    is, wait until the other process has written too, check nothing of ours
    changed, free, report."""
    import numpy as np

    import pinpool

    ok = True
    with pinpool.Client(socket) as c:
        with pinpool.ServerPinnedMemoryPool(dtype=np.uint8, pool_size=0.0625, client=c,
                                            lease_mb=4) as p:
            blocks = [p.alloc(size) for size in (100, 64 * 1024, 3 * MiB, 6 * MiB)]
            s = c.alloc(2 * MiB + 5)
            arrays = blocks + [s.as_array()]
            for a in arrays:
                a[:] = me
            results.put(("slice", me, os.getpid(), c.client_id, s.start_offset, s.size))
            barrier.wait(timeout=60)  # both processes have written
            barrier.wait(timeout=60)  # the parent has looked at the pool
            for a in arrays:
                ok = ok and bool((a == me).all())
            for b in blocks:
                p.free(b)
            c.free(s)
    results.put(("done", me, ok))
