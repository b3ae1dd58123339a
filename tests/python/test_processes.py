"""Two Python processes on one daemon: disjoint memory, each keeps its data.

Sharing one slice's data between processes needs named slices (not in the
daemon yet): today only a slice's owner gets its chunk descriptors, so this
checks isolation and accounting instead.
"""
import multiprocessing as mp

import pinpool
from _procs import client_process


def test_two_processes_get_disjoint_memory_and_keep_their_data(daemon):
    ctx = mp.get_context("spawn")  # never fork a process that may hold gRPC state
    results = ctx.Queue()
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=client_process, args=(daemon.socket, me, results, barrier))
             for me in (0x11, 0x22)]
    for p in procs:
        p.start()
    try:
        slices = [results.get(timeout=60) for _ in procs]
        barrier.wait(timeout=60)
        info = daemon.info()
        by_id = {u["client_id"]: u for u in info["clients"]}
        for _, me, pid, client_id, off, size in slices:
            assert by_id[client_id]["pid"] == pid, "each process is its own client"
            assert by_id[client_id]["bytes"] >= 4 * (1 << 20) + size  # its lease + slice
        (_, _, _, _, a_off, a_size), (_, _, _, _, b_off, b_size) = slices
        assert a_off + a_size <= b_off or b_off + b_size <= a_off, "slices overlap"
        barrier.wait(timeout=60)
        done = [results.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
    assert sorted(d[1] for d in done) == [0x11, 0x22]
    assert all(d[2] for d in done), f"a process saw its data change: {done}"
    assert [p.exitcode for p in procs] == [0, 0]
    assert daemon.used(settle_s=2.0) == 0
    assert pinpool.__version__
