"""pinpool.Client: one libpinpool context (the process's lease on the daemon).

Owns: the context; its slices go back to the daemon on free(), free_all(),
close(), or when the process exits.  When the daemon goes, the session and its
slices go with it: every call raises SessionError until reconnect() (a new
session on the same context; the old slices are unmapped).
Never: holds a Python lock across a library call (the library is thread-safe,
and ctypes releases the GIL during the call).
"""

import ctypes
import errno

from . import _lib
from ._lib import ConnectError, NotFoundError, error

GET_FIRST_TRY = 64 << 10  # get() reads objects up to this size in one call

HOST = -1  # device_id of host slices (PINPOOL_HOST)
ALLOC_GPU_ONLY = 0x1  # PINPOOL_ALLOC_GPU_ONLY: a host slice for CUDA copies only
ALLOC_KEEP = 0x2      # PINPOOL_ALLOC_KEEP: kept under its tag past this process


class Slice:
    """A slice mapped in this process.  Valid until freed or the client closes."""

    __slots__ = ("id", "ptr", "size", "device_id", "start_offset")

    def __init__(self, s):
        self.id = s.id
        self.ptr = s.ptr
        self.size = s.size
        self.device_id = s.device_id
        self.start_offset = s.start_offset

    def buffer(self):
        """A writable ctypes array (supports the buffer protocol: memoryview,
        numpy.frombuffer, torch.frombuffer) over the slice's bytes.  Host slices only."""
        if self.device_id != HOST:
            raise ValueError("a device slice has no CPU buffer; use __cuda_array_interface__"
                             " or as_tensor()")
        return (ctypes.c_uint8 * self.size).from_address(self.ptr)

    @property
    def __cuda_array_interface__(self):
        """Device slices as 1-D uint8 CUDA arrays (torch.as_tensor(s, device="cuda"),
        CuPy, Numba).  Version 3; no stream synchronisation is implied."""
        if self.device_id == HOST:
            raise AttributeError("__cuda_array_interface__ is for device slices")
        return {"shape": (self.size,), "typestr": "|u1", "data": (self.ptr, False),
                "version": 3, "strides": None}

    def as_tensor(self, dtype=None):
        """A 1-D torch tensor over the slice (needs torch): a CPU tensor for host
        slices, a CUDA tensor on the slice's GPU for device slices."""
        import torch

        dtype = dtype or torch.uint8
        if self.device_id == HOST:
            t = torch.frombuffer(self.buffer(), dtype=torch.uint8)
        else:
            t = torch.as_tensor(self, device=f"cuda:{self.device_id}")
        itemsize = torch.empty((), dtype=dtype).element_size()
        return t[: self.size // itemsize * itemsize].view(dtype)

    def as_array(self, dtype="uint8"):
        """A 1-D numpy array of dtype over the slice (needs numpy)."""
        import numpy as np

        dt = np.dtype(dtype)
        return np.frombuffer(self.buffer(), dtype=np.uint8,
                             count=self.size // dt.itemsize * dt.itemsize).view(dt)

    def __repr__(self):
        return (f"Slice(id={self.id}, size={self.size}, device_id={self.device_id},"
                f" start_offset={self.start_offset})")


def _slice_id(slice_or_id):
    return slice_or_id.id if isinstance(slice_or_id, Slice) else int(slice_or_id)


class Client(_lib.Closable):
    """A connection to `pinpool serve` at socket (None: $PINPOOL_SOCKET, else the
    default path).  Raises ConnectError, with the library's reason, when the daemon
    cannot be reached."""

    def __init__(self, socket=None):
        L = _lib.lib()
        self._L = L
        ctx = L.pinpool_connect(socket.encode() if socket is not None else None)
        if not ctx:
            raise MemoryError("pinpool_connect: out of memory")
        rc = L.pinpool_err(ctx)
        if rc != 0:
            msg = L.pinpool_errmsg(ctx).decode()
            L.pinpool_close(ctx)
            raise error(rc, msg)
        self._ctx = ctx
        self.socket = socket

    # -- helpers --
    def _handle(self):
        if self._ctx is None:
            raise ConnectError(_lib.ECLOSED, "the client is closed")
        return self._ctx

    def _fail(self, rc):
        return error(rc, self._L.pinpool_errmsg(self._ctx).decode())

    def _call(self, fn, *args):
        """fn(the context, *args); raises the error for a nonzero result."""
        rc = fn(self._handle(), *args)
        if rc != 0:
            raise self._fail(rc)

    @property
    def client_id(self):
        """The id the daemon gave this session ("s-<pid>-<hex>")."""
        return self._L.pinpool_client_id(self._handle()).decode()

    @property
    def session_ended(self):
        """True once the daemon went (it exited or restarted): every call then raises
        SessionError until reconnect()."""
        return self._L.pinpool_err(self._handle()) == _lib.ESESSION

    def reconnect(self):
        """A new session with the daemon now at the socket (pinpool_reconnect): nothing
        of the old one survives - its slices are forgotten and unmapped (every Slice and
        array over them is invalid: touching one crashes the process), pools on this
        client lease anew.  Kept slices (attach) and named objects (acquire, get) are
        found again by tag and key where the daemon still has them.  Raises
        ConnectError while no daemon runs (the client stays as it was)."""
        self._call(self._L.pinpool_reconnect)

    # -- calls --
    def alloc(self, size, alignment=0, tag=None, device_id=HOST, flags=0):
        """Allocate and map size bytes; returns a Slice.  device_id >= 0: a slice of
        that GPU's device pool.  flags: ALLOC_GPU_ONLY, ALLOC_KEEP (needs tag)."""
        opts = _lib.AllocOpts_t(device_id, alignment, tag.encode() if tag else None, flags)
        out = _lib.Slice_t()
        self._call(self._L.pinpool_alloc, size, ctypes.byref(opts), ctypes.byref(out))
        return Slice(out)

    def attach(self, tag, flags=0):
        """Map the slice kept under tag (alloc with ALLOC_KEEP, perhaps by another
        process that has exited); returns a Slice.  It stays kept: detach() unmaps,
        free() frees it."""
        out = _lib.Slice_t()
        self._call(self._L.pinpool_attach, tag.encode(), flags, ctypes.byref(out))
        return Slice(out)

    def detach(self, slice_or_id):
        """Unmap a slice from this process without freeing it."""
        self._call(self._L.pinpool_detach, _slice_id(slice_or_id))

    def free(self, slice_or_id):
        """Free one slice of this client (a Slice or its id); returns the bytes freed.
        NotFoundError when it is not one of this client's."""
        freed = _lib.c_u64()
        self._call(self._L.pinpool_free, _slice_id(slice_or_id), ctypes.byref(freed))
        return freed.value

    def free_all(self):
        """Free every slice of this client; returns the bytes freed."""
        freed = _lib.c_u64()
        self._call(self._L.pinpool_free_all, ctypes.byref(freed))
        return freed.value

    def info(self):
        """GetPoolInfo as a dict (sizes in bytes; "clients": a list of dicts)."""
        pi = _lib.PoolInfo_t()
        self._call(self._L.pinpool_pool_info, ctypes.byref(pi))
        try:
            out = {name: getattr(pi, name) for name, _ in _lib.PoolInfo_t._fields_
                   if name not in ("usage", "num_usage", "host_backend", "mode", "devices",
                                   "num_devices", "spill", "stopped_short", "gpus", "num_gpus")}
            out["host_backend"] = pi.host_backend.decode()
            out["mode"] = pi.mode.decode()
            # why the host pool stopped growing short of capacity_bytes; "" if it did not
            out["stopped_short"] = pi.stopped_short.decode(errors="replace")
            out["devices"] = [{"device_id": d.device_id, "name": d.name.decode(),
                               "capacity_bytes": d.capacity_bytes, "used_bytes": d.used_bytes,
                               "free_bytes": d.free_bytes,
                               "largest_free_extent": d.largest_free_extent,
                               "num_slices": d.num_slices}
                              for d in (pi.devices[i] for i in range(pi.num_devices))]
            # the GPUs the daemon holds a CUDA context on, and why
            out["gpus"] = [{"device_id": g.device_id, "role": g.role.decode(),
                            "device_pool_bytes": g.device_pool_bytes,
                            "gpu_used_bytes": g.gpu_used_bytes, "gpu_total_bytes": g.gpu_total_bytes}
                           for g in (pi.gpus[i] for i in range(pi.num_gpus))]
            out["clients"] = [{"client_id": u.client_id.decode(), "bytes": u.bytes,
                               "device_bytes": u.device_bytes, "slices": u.slices,
                               "pid": u.pid, "uid": u.uid}
                              for u in (pi.usage[i] for i in range(pi.num_usage))]
            sp = pi.spill
            out["spill"] = {name: getattr(sp, name) for name, _ in _lib.SpillInfo_t._fields_}
            out["spill"]["tier"] = sp.tier.decode()
            out["spill"]["last_error"] = sp.last_error.decode(errors="replace")
        finally:
            self._L.pinpool_pool_info_free(ctypes.byref(pi))
        return out

    # -- named objects --
    def release(self, slice_or_id, key, ttl_ms=0):
        """Give a host slice to the daemon under key (it may spill it); the slice's
        memory must not be used afterwards.  AlreadyExists-style PinpoolError if key is taken."""
        self._call(self._L.pinpool_release, _slice_id(slice_or_id), key.encode(), ttl_ms)

    def acquire(self, key):
        """The object under key as a Slice of this client again (restored if spilled)."""
        out = _lib.Slice_t()
        self._call(self._L.pinpool_acquire, key.encode(), 0, ctypes.byref(out))
        return Slice(out)

    def put(self, key, data, ttl_ms=0):
        """Store bytes under key, replacing an object there.  Up to the daemon's
        --max-message-size (64 MiB) in one message, which replaces at once; a larger
        object goes through a slice (alloc, copy, release under key): an old object is
        removed first, so a reader may find none for that moment (pinpool_put)."""
        data = bytes(data)
        self._call(self._L.pinpool_put, key.encode(), data, len(data), ttl_ms)

    def get(self, key):
        """The bytes under key; NotFoundError if there is none.  An object larger than a
        reply may carry raises PinpoolError (-EMSGSIZE) naming the limit and the way:
        acquire(key), copy, release(slice, key)."""
        got = _lib.c_u64()
        buf = ctypes.create_string_buffer(GET_FIRST_TRY)
        rc = self._L.pinpool_get(self._handle(), key.encode(), buf, GET_FIRST_TRY,
                                 ctypes.byref(got))
        if rc == 0:
            return ctypes.string_at(buf, got.value)
        if rc != -errno.ENOBUFS:
            raise self._fail(rc)
        buf = ctypes.create_string_buffer(got.value)
        self._call(self._L.pinpool_get, key.encode(), buf, got.value, ctypes.byref(got))
        return buf.raw[:got.value]

    def exists(self, key):
        rc = self._L.pinpool_exists(self._handle(), key.encode())
        if rc < 0:
            raise self._fail(rc)
        return rc == 1

    def remove(self, key):
        """Remove the object under key; NotFoundError if there is none."""
        self._call(self._L.pinpool_remove, key.encode())

    def batch_put(self, items, ttl_ms=0):
        """{key: bytes}: put each (one call per item)."""
        for k, v in dict(items).items():
            self.put(k, v, ttl_ms)

    def batch_get(self, keys):
        """[bytes or None per key] (None where absent)."""
        out = []
        for k in keys:
            try:
                out.append(self.get(k))
            except NotFoundError:
                out.append(None)
        return out

    def batch_exists(self, keys):
        return [self.exists(k) for k in keys]

    def batch_remove(self, keys):
        """Remove each key; returns how many were there."""
        n = 0
        for k in keys:
            try:
                self.remove(k)
                n += 1
            except NotFoundError:
                pass
        return n

    # -- swap (pinpool_swap_*: pause/resume the GPU memory of a model) --
    # stream: a CUstream as an int (torch: torch.cuda.current_stream().cuda_stream) or
    # None (the default stream).  Every call raises PinpoolError (code ECUDA) without
    # CUDA in this process or with a CPU-only daemon.
    def _swap(self, fn, tag, *args):
        if not isinstance(tag, str):
            raise TypeError("a swap tag is a str")
        self._call(fn, tag.encode(), *args)

    def swap_alloc(self, tag, size, device=0):
        """Device memory (CUDA VMM) under tag; returns its address (an int, a CUdeviceptr),
        stable across pause/resume."""
        out = _lib.c_u64()
        self._swap(self._L.pinpool_swap_alloc, tag, device, size, ctypes.byref(out))
        return out.value

    def swap_register(self, tag, ptr, size, device=0):
        """Add a device buffer you own (e.g. tensor.data_ptr(), tensor.nbytes) to tag:
        copied by pause/resume, never freed."""
        self._swap(self._L.pinpool_swap_register, tag, device, ptr, size)

    def swap_pause(self, tag, stream=None, release=True, spillable=False):
        """Queue the copy of tag's buffers into its host copy on stream; with release,
        their GPU memory is given back at swap_wait; with spillable, the host copy is
        released to the daemon, which may spill it to its tier."""
        self._swap(self._L.pinpool_swap_pause, tag, stream,
                   (_lib.SWAP_RELEASE if release else 0) | (_lib.SWAP_SPILLABLE if spillable else 0))

    def swap_resume(self, tag, stream=None, keep_host=False):
        """Map GPU memory again and queue the copy back on stream (also of a copy
        another process paused under tag)."""
        self._swap(self._L.pinpool_swap_resume, tag, stream,
                   _lib.SWAP_KEEP_HOST if keep_host else 0)

    def swap_wait(self, tag):
        """Block until tag's pause or resume is done and finish it."""
        self._swap(self._L.pinpool_swap_wait, tag)

    def swap_drop(self, tag, free_host=False):
        """Forget tag (frees its swap_alloc memory); free_host also frees the kept copy."""
        self._swap(self._L.pinpool_swap_drop, tag, _lib.SWAP_FREE_HOST if free_host else 0)

    def swap_info(self, tag):
        """The tag's state as a dict."""
        out = _lib.SwapInfo_t()
        self._swap(self._L.pinpool_swap_info, tag, ctypes.byref(out))
        return {"state": _lib.SWAP_STATES[out.state], "device_id": out.device_id,
                "num_buffers": out.num_buffers, "bytes": out.bytes,
                "device_bytes": out.device_bytes, "host_slice_id": out.host_slice_id,
                "released": bool(out.released)}

    def swap_free(self, tag, ptr):
        """Take one buffer out of tag: a swap_alloc buffer's GPU memory is freed, a
        registered one forgotten; later pauses do not copy it."""
        self._swap(self._L.pinpool_swap_free, tag, ptr)

    def swap_usage(self):
        """{tag: bytes} of the swap host copies kept in the daemon (by any process,
        this one's and those of processes that exited), from info()'s clients."""
        prefix = "kept:swap:"
        return {c["client_id"][len(prefix):]: c["bytes"] for c in self.info()["clients"]
                if c["client_id"].startswith(prefix)}

    def swap_config(self, streams=1, chunk_bytes=0):
        """Copy over streams helper streams in pieces of chunk_bytes (0: whole buffers)."""
        self._call(self._L.pinpool_swap_config, streams, chunk_bytes)

    def ping(self):
        self._call(self._L.pinpool_ping)

    def close(self):
        """Unmap everything and end the lease (the daemon frees this client's slices).
        Every Slice and array over them becomes invalid.  Idempotent."""
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            self._L.pinpool_close(ctx)

    @property
    def closed(self):
        return self._ctx is None

    def __repr__(self):
        return f"Client(socket={self.socket!r}, closed={self.closed})"
