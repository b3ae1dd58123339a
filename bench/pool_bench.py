#!/usr/bin/env python3
"""pool_bench.py SOCKET - Python alloc+free pairs/s: pinpool.ServerPinnedMemoryPool
(blocks from the C arena, no RPC per block) vs a first-fit pure-Python pool in
the style of the one it replaces (lpllm's PinnedMemoryPool: per-chunk free
lists, linear search, free by a linear search of the allocated blocks, then
sort and merge), measured side by side in one run.  numpy arrays (torch is not
needed; with torch both pools would pay the same tensor-view costs on top).

Patterns (sizes uniform in [64 KiB, 4 MiB], float16 blocks):
  task:    allocate 5 blocks, free them (lpllm's attention path), 1 and 3 threads
  random:  200 live blocks; free a random one, allocate a new one
"""
import ctypes
import random
import sys
import threading
import time

import numpy as np

import pinpool

MiB = 1 << 20
GiB = 1 << 30


def data_ptr(a):
    """The same pointer lookup for both pools."""
    return ctypes.addressof(ctypes.c_char.from_buffer(a))


class FirstFitPool:
    """The baseline, written after lpllm's PinnedMemoryPool (its memory here is plain
    numpy memory: pinning does not change the bookkeeping measured)."""

    def __init__(self, dtype=np.float16, pool_size=2, chunk_size_mb=1):
        self.dtype = np.dtype(dtype)
        self.element_size = self.dtype.itemsize
        self.pool_size = pool_size
        total = int(pool_size * GiB) // self.element_size
        per_chunk = chunk_size_mb * MiB // self.element_size
        self.pool_memory = []
        while total > 0:
            n = min(per_chunk, total)
            self.pool_memory.append(np.empty(n, dtype=self.dtype))
            total -= n
        self.chunk_ptr = [data_ptr(c) for c in self.pool_memory]
        self.lock = threading.RLock()
        self.allocated_blocks = []  # (chunk_idx, start, size) in elements
        self.free_list = [(i, 0, c.size) for i, c in enumerate(self.pool_memory)]

    def alloc(self, size_bytes):
        if size_bytes <= 0:
            raise ValueError("size must be positive")
        need = (size_bytes + self.element_size - 1) // self.element_size
        with self.lock:
            for i, (ci, start, size) in enumerate(self.free_list):
                if size >= need:
                    if size == need:
                        self.free_list.pop(i)
                    else:
                        self.free_list[i] = (ci, start + need, size - need)
                    self.allocated_blocks.append((ci, start, need))
                    return self.pool_memory[ci][start:start + need]
            raise MemoryError("no free block is large enough")

    def free(self, block):
        ptr = data_ptr(block)
        with self.lock:
            for i, (ci, start, size) in enumerate(self.allocated_blocks):
                if self.chunk_ptr[ci] + start * self.element_size == ptr:
                    self.allocated_blocks.pop(i)
                    break
            else:
                raise ValueError("not an allocated block")
            self.free_list.append((ci, start, size))
            self.free_list.sort(key=lambda x: (x[0], x[1]))
            merged = []
            cc, cs, cz = self.free_list[0]
            for c, s, z in self.free_list[1:]:
                if c == cc and cs + cz == s:
                    cz += z
                else:
                    merged.append((cc, cs, cz))
                    cc, cs, cz = c, s, z
            merged.append((cc, cs, cz))
            self.free_list = merged


def sizes(seed, n):
    rng = random.Random(seed)
    return [rng.randrange(64 * 1024, 4 * MiB) for _ in range(n)]


def task_pattern(pool, seed, tasks):
    sz = sizes(seed, 5 * 64)
    for t in range(tasks):
        blocks = [pool.alloc(sz[(t * 5 + k) % len(sz)]) for k in range(5)]
        for b in blocks:
            pool.free(b)
    return tasks * 5


def random_pattern(pool, seed, pairs, live=200):
    rng = random.Random(seed)
    sz = sizes(seed, 1024)
    held = [pool.alloc(sz[i]) for i in range(live)]
    for i in range(pairs):
        k = rng.randrange(live)
        pool.free(held[k])
        held[k] = pool.alloc(sz[i % len(sz)])
    for b in held:
        pool.free(b)
    return pairs


def rate(fn, pool, threads, work):
    done = [0] * threads

    def run(i):
        done[i] = fn(pool, 1000 + i, work)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(done) / (time.perf_counter() - t0)


def main():
    sock = sys.argv[1] if len(sys.argv) > 1 else None
    scale = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    base = FirstFitPool(np.float16, pool_size=1, chunk_size_mb=64)
    with pinpool.ServerPinnedMemoryPool(np.float16, pool_size=0.75, socket=sock) as ours:
        rows = [
            ("task, 5 live, 1 thread", task_pattern, 1, int(20000 * scale)),
            ("task, 5 live, 3 threads", task_pattern, 3, int(7000 * scale)),
            ("random, 200 live, 1 thread", random_pattern, 1, int(20000 * scale)),
        ]
        print(f"{'pattern':30s} {'pinpool pairs/s':>16s} {'first-fit pairs/s':>18s} {'ratio':>7s}")
        for name, fn, threads, work in rows:
            fn(ours, 1, max(work // 20, 10))  # warm-up (takes the leases)
            fn(base, 1, max(work // 20, 10))
            r_ours = rate(fn, ours, threads, work)
            r_base = rate(fn, base, threads, work)
            print(f"{name:30s} {r_ours:16,.0f} {r_base:18,.0f} {r_ours / r_base:6.2f}x")
        st = ours.stats()
        print(f"pinpool arena: {st['num_leases']} leases of {st['lease_size'] >> 20} MiB,"
              f" {st['allocs']} allocs, {st['frees']} frees")


if __name__ == "__main__":
    main()
