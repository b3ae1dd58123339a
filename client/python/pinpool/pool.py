"""pinpool.ServerPinnedMemoryPool: a drop-in for lpllm's PinnedMemoryPool whose
memory is pinned by the node's pinpool daemon.

Owns: one Client (unless given one), one C arena (pinpool_arena_*) on it, and a
uint8 array (numpy or torch) over each of the arena's leases, from which blocks
are cut as views.  Blocks are placed and freed by the C arena: no RPC per
block (only when the arena takes a lease, or for a block larger than a lease).
When the daemon goes (it exits or restarts), the leases go with the client's
session: the pool reconnects its client (also one it was given) for the next
block it hands out or the next get_usage_info(), and the C arena starts over with
new leases; blocks of the old leases are gone, and free() of one raises
pinpool.SessionError.
Never: frees memory that a caller's array may still use, except on close() or
when the daemon took it (a session that ended).
Locking: none of its own; the C arena is thread-safe and ctypes releases the
GIL for each call.
"""

import ctypes
import weakref

from . import _lib
from ._lib import PinpoolError, SessionError, error
from .client import Client

MiB = 1 << 20
GiB = 1 << 30
DEFAULT_LEASE_MB = 64
PAGE = 4096  # PINPOOL_ARENA_MAX_ALIGN: the arena leases whole pages


def _torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    return torch


def _is_torch_dtype(dtype):
    return type(dtype).__module__ == "torch" and type(dtype).__name__ == "dtype"


def _release(L, arena, client, own_client):
    L.pinpool_arena_destroy(arena)
    if own_client:
        client.close()


class ServerPinnedMemoryPool(_lib.Closable):
    """Pinned host memory from the pinpool daemon, with lpllm's PinnedMemoryPool calls.

    ServerPinnedMemoryPool(dtype=torch.bfloat16, pool_size=2, chunk_size_mb=1,
                           *, socket=None, lease_mb=None, client=None)

    dtype: a torch dtype (blocks are torch tensors) or anything numpy.dtype accepts
        (blocks are numpy arrays).  Default: torch.bfloat16 when torch is importable,
        else numpy.float16 (the same 2-byte elements; numpy has no bfloat16).
    pool_size: GiB this pool may hold at most (any positive float; at least one
        4 KiB page).  Memory is leased from the daemon as needed, lease_mb at a time
        (default 64, and never more than pool_size: a small pool takes one lease of
        its whole size), in whole 4 KiB pages; the first lease at construction.
    chunk_size_mb: accepted for compatibility and otherwise unused: the daemon
        chooses its chunks, and unlike the old pool a block may be larger than
        chunk_size_mb (it then gets a lease of its own).
    socket: the daemon's socket (None: $PINPOOL_SOCKET or the default).
    client: a pinpool.Client to use (it stays open on close()); else the pool
        opens and closes its own.

    Differences from the pool it replaces, on purpose:
    - free() of anything that is not a live block of this pool raises ValueError
      (pinpool.NotFoundError); the old pool ignored it.
    - get_usage_info()["fragmentation"] is, as before, the number of free extents
      (in the leased memory); "fragmentation_ratio" is 1 - largest free / free.
    - close() (or leaving a `with` block) gives the memory back to the daemon; every
      block becomes invalid and must not be touched again.  Without close(), the
      memory goes back when the pool is garbage collected with no block alive, or
      when the process exits.
    - When the daemon exits or restarts, every block goes with the client's session:
      the next alloc() or get_usage_info() reconnects the client (Client.reconnect)
      and leases anew; free() of an old block raises pinpool.SessionError (its memory
      is gone; it is unmapped, so touching it crashes the process).
    """

    def __init__(self, dtype=None, pool_size=2, chunk_size_mb=1, *, socket=None,
                 lease_mb=None, client=None):
        torch = None
        if dtype is None:
            torch = _torch()
            dtype = torch.bfloat16 if torch is not None else "float16"
        if _is_torch_dtype(dtype):
            import torch

            self._torch = torch
            self.element_size = torch.empty(0, dtype=dtype).element_size()
        else:
            import numpy as np

            self._torch = None
            self._np = np
            dtype = np.dtype(dtype)
            self.element_size = dtype.itemsize
        self.dtype = dtype
        if 256 % self.element_size != 0:  # blocks start on 256-byte boundaries
            raise ValueError(f"the element size ({self.element_size}) must divide 256")
        if not pool_size > 0:
            raise ValueError(f"pool_size must be greater than 0 (GiB), not {pool_size}")
        if lease_mb is not None and not lease_mb > 0:
            raise ValueError(f"lease_mb must be greater than 0, not {lease_mb}")
        self.pool_size = pool_size
        self.chunk_size_mb = chunk_size_mb
        self.max_bytes = max(int(pool_size * GiB), PAGE)
        lease = int((lease_mb if lease_mb is not None else DEFAULT_LEASE_MB) * MiB)
        # Whole pages, rounded down so that one lease never passes max_bytes (the
        # arena would round up, past the cap).
        self.lease_size = max(PAGE, min(lease, self.max_bytes) // PAGE * PAGE)

        self._L = L = _lib.lib()
        own = client is None
        self._client = Client(socket) if own else client
        opts = _lib.ArenaOpts_t(max_bytes=self.max_bytes, tag=b"ServerPinnedMemoryPool")
        arena = ctypes.c_void_p()
        rc = L.pinpool_arena_create(self._client._handle(), self.lease_size,
                                    ctypes.byref(opts), ctypes.byref(arena))
        if rc != 0:
            err = self._client._fail(rc)
            if own:
                self._client.close()
            raise err
        self._arena = arena.value
        self._leases = {}  # (lease id, base) -> uint8 array over the whole lease
        self._finalizer = weakref.finalize(self, _release, L, self._arena, self._client, own)

    # -- arrays over memory ------------------------------------------------------------

    def _elements_at(self, address, nbytes):
        """A 1-D array of the pool's dtype (torch or numpy) over [address, address +
        nbytes), nbytes a multiple of the element size.  The buffer object keeps this
        pool alive for as long as any view of it lives."""
        buf = (ctypes.c_uint8 * nbytes).from_address(address)
        buf._pinpool_owner = self
        if self._torch is not None:
            return self._torch.frombuffer(buf, dtype=self.dtype)
        return self._np.frombuffer(buf, dtype=self.dtype)

    def _block(self, b, n):
        """The block of n elements that b describes: a view of its lease's array
        (leases and block offsets are multiples of 256 bytes, so of the element
        size), or an array of its own for a large block."""
        if b.large:
            return self._elements_at(b.ptr, n * self.element_size)
        # A new session's leases reuse ids, never addresses (the old ones stay reserved).
        key = (b.lease_id, b.lease_base)
        base = self._leases.get(key)
        if base is None:
            base = self._leases[key] = self._elements_at(b.lease_base, b.lease_size)
        off = (b.ptr - b.lease_base) // self.element_size
        return base[off:off + n]

    # -- the PinnedMemoryPool calls ----------------------------------------------------

    def alloc(self, size_bytes):
        """A 1-D block of ceil(size_bytes / element_size) elements of the pool's dtype.
        ValueError when size_bytes <= 0, MemoryError when nothing fits."""
        if size_bytes <= 0:
            raise ValueError(f"allocation size must be positive, not {size_bytes}")
        el = self.element_size
        n = (int(size_bytes) + el - 1) // el
        arena = self._arena
        if arena is None:
            raise ValueError("the pool is closed")
        b = _lib.ArenaBlock_t()
        rc = self._L.pinpool_arena_alloc_block(arena, n * el, 0, ctypes.byref(b))
        if rc == _lib.ESESSION:  # the daemon went: new blocks from a new session
            self._reconnect()
            rc = self._L.pinpool_arena_alloc_block(arena, n * el, 0, ctypes.byref(b))
        if rc != 0:
            raise self._error(rc, n * el)
        return self._block(b, n)

    def _reconnect(self):
        """The client's session ended: a new one (raises ConnectError while no daemon
        runs); the arena starts over on it at its next call."""
        if self._client.session_ended:
            self._client.reconnect()
        self._leases.clear()

    def alloc_same_pin_tensor(self, tensor):
        """A block of the pool's dtype with tensor's shape (torch tensor or numpy array)."""
        shape = tuple(tensor.shape)
        n = 1
        for d in shape:
            n *= d
        return self.alloc(n * self.element_size).reshape(shape)

    def reshape(self, memory_block, new_shape):
        """A view of memory_block with new_shape (same number of elements)."""
        n = 1
        for d in new_shape:
            n *= d
        numel = memory_block.numel() if self._torch is not None else memory_block.size
        if n != numel:
            raise ValueError(f"shape {tuple(new_shape)} needs {n} elements, the block has {numel}")
        return memory_block.view(new_shape) if self._torch is not None else \
            memory_block.reshape(new_shape)

    def free(self, memory_block):
        """Give a block (or any view that starts where it starts) back to the pool.
        Raises ValueError (pinpool.NotFoundError) when it is not a live block of this
        pool: already freed, another pool's, or not from a pool at all."""
        arena = self._arena
        if arena is None:
            raise ValueError("the pool is closed")
        ptr = self._data_ptr(memory_block)
        rc = self._L.pinpool_arena_free(arena, ptr)
        if rc != 0:
            raise error(rc, self._L.pinpool_errmsg(self._client._handle()).decode())

    def get_usage_info(self):
        """What the pool holds and can still give, from the arena's counters and the
        daemon's (one GetPoolInfo call):
        total_gb: pool_size, or the daemon's capacity where that is smaller;
        allocated_mb: asked for by live blocks;
        free_mb: free in this pool's leases, plus what it may still lease: what the
            daemon's pool does not hold in slices (its capacity less its used bytes:
            other clients' slices and released objects are not free; memory the
            daemon has still to pin is), up to pool_size;
        fragmentation, fragmentation_ratio: see the class docstring;
        leased_mb, num_leases, num_blocks: the arena's.
        The daemon's per-client quota (--client-quota) is not counted in free_mb.
        After the daemon went, it reconnects first: the numbers are the new session's."""
        if self._arena is None:
            raise ValueError("the pool is closed")
        try:
            daemon = self._client.info()
        except SessionError:
            self._reconnect()
            daemon = self._client.info()
        st = self.stats()
        unused = max(daemon["capacity_bytes"] - daemon["used_bytes"], 0)
        room = min(max(self.max_bytes - st["leased_bytes"], 0), unused)
        return {
            "total_gb": min(self.max_bytes, daemon["capacity_bytes"]) / GiB,
            "allocated_mb": st["requested_bytes"] / MiB,
            "free_mb": (st["free_bytes"] + room) / MiB,
            "fragmentation": st["num_free_extents"],
            "fragmentation_ratio": st["fragmentation"],
            "leased_mb": st["leased_bytes"] / MiB,
            "num_leases": st["num_leases"] + st["num_large"],
            "num_blocks": st["num_blocks"],
        }

    def stats(self):
        """The C arena's counters (pinpool_arena_stats_t) as a dict."""
        if self._arena is None:
            raise ValueError("the pool is closed")
        st = _lib.ArenaStats_t()
        self._L.pinpool_arena_stats(self._arena, ctypes.byref(st))
        return {name: getattr(st, name) for name, _ in _lib.ArenaStats_t._fields_}

    def close(self):
        """Give every lease back to the daemon (and close the pool's own client).
        Every block becomes invalid.  Idempotent."""
        if self._arena is not None:
            self._arena = None
            self._leases.clear()
            self._finalizer()

    @property
    def closed(self):
        return self._arena is None

    # -- helpers -----------------------------------------------------------------------

    def _data_ptr(self, block):
        if self._torch is not None and isinstance(block, self._torch.Tensor):
            return block.data_ptr()
        try:  # a writable contiguous buffer: 3x faster than __array_interface__
            return ctypes.addressof(ctypes.c_char.from_buffer(block))
        except (TypeError, ValueError):
            pass
        try:
            return block.__array_interface__["data"][0]
        except (AttributeError, KeyError, TypeError):
            raise TypeError(f"not a block of a pool: {type(block).__name__}") from None

    def _error(self, rc, nbytes):
        msg = self._L.pinpool_errmsg(self._client._handle()).decode()
        if rc in (_lib.ENOSPC, _lib.ETOOBIG):
            e = MemoryError(f"no room for {nbytes} bytes in the pinned pool: {msg}")
            e.pinpool_error = error(rc, msg)
            return e
        return error(rc, msg)

    def __repr__(self):
        return (f"ServerPinnedMemoryPool(dtype={self.dtype}, pool_size={self.pool_size},"
                f" lease_size={self.lease_size}, closed={self.closed})")


__all__ = ["ServerPinnedMemoryPool", "PinpoolError"]
