"""torch.cuda of the stand-in (see torch/__init__.py): MemPool, use_mem_pool,
graph, current_device."""
import contextlib
import itertools
import threading

from . import memory  # noqa: F401

_ids = itertools.count(1)
_pools = {}
_local = threading.local()


class OutOfMemoryError(RuntimeError):
    pass


def current_device():
    return 0


def _stack():
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def _current_pool():
    s = _stack()
    return s[-1] if s else None


class MemPool:
    def __init__(self, allocator=None):
        self.allocator = allocator
        self.id = (next(_ids), 0)
        _pools[self.id] = self


@contextlib.contextmanager
def use_mem_pool(pool, device=None):
    _stack().append(pool)
    try:
        yield
    finally:
        _stack().pop()


def graph_pool_handle():
    return (next(_ids), 1)


class CUDAGraph:
    def __init__(self):
        self._pool = None
        self.captured = False

    def pool(self):
        return self._pool

    def replay(self):
        assert self.captured


@contextlib.contextmanager
def graph(cuda_graph, pool=None, stream=None, capture_error_mode="global"):
    """Allocations during capture go to the pool with that id (torch: the graph's
    private pool, or the MemPool whose id it is)."""
    mem = _pools.get(tuple(pool)) if pool is not None else MemPool()
    if mem is None:  # a graph_pool_handle nobody made a MemPool for
        mem = MemPool()
    cuda_graph._pool = mem.id
    _stack().append(mem)
    try:
        yield
    finally:
        _stack().pop()
        cuda_graph.captured = True
