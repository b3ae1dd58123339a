"""ctypes bindings of libpinpool.so (client/pinpool.h) and the error classes.

Owns: the one loaded library (loaded on first use, never at import) and the
structure layouts, which must match pinpool.h field for field.
Never: keeps state about contexts; client.py and pool.py do.
"""

import ctypes
import ctypes.util
import os
import threading

# ---- errors (pinpool.h PINPOOL_ERRNO_MAP) ---------------------------------------------

EINVAL = -1001
ETOOBIG = -1002
EALIGN = -1003
ENODEV = -1004
ENOSPC = -1005
ENOENT = -1006
EPERM = -1007
ESHUTDOWN = -1008
ECONNECT = -1009
EPROTO = -1010
EINTERNAL = -1011
ECUDA = -1012
ECLOSED = -1013
ETIMEOUT = -1014
EEXIST = -1015
ENOKEY = -1016
ETIER = -1017
EBUSY = -1018
ESESSION = -1019


class PinpoolError(Exception):
    """A libpinpool call failed.  code: the negative pinpool (or -errno) code;
    name: "PINPOOL_ENOSPC", ...; the message is the library's explanation."""

    def __init__(self, code, message, name=None):
        super().__init__(message)
        self.code = code
        self.name = name if name is not None else _err_name(code)


class InvalidArgumentError(PinpoolError, ValueError):
    """EINVAL, ETOOBIG (with the pool drop-in: MemoryError instead), EALIGN, ENODEV."""


class OutOfPoolMemoryError(PinpoolError, MemoryError):
    """ENOSPC: no free extent (or no lease within the caps) fits."""


class NotFoundError(PinpoolError, ValueError):
    """ENOENT: no such slice, or not a live block of this pool."""


class PermissionDeniedError(PinpoolError, PermissionError):
    """EPERM: another client's slice."""


class ConnectError(PinpoolError, ConnectionError):
    """ECONNECT, ECLOSED, ESHUTDOWN: the daemon cannot be reached or is going away."""


class SessionError(ConnectError):
    """ESESSION: the daemon went (it exited or restarted), and with it this client's
    session and every slice of it; Client.reconnect() makes a new session."""


_CLASSES = {
    EINVAL: InvalidArgumentError,
    ETOOBIG: InvalidArgumentError,
    EALIGN: InvalidArgumentError,
    ENODEV: InvalidArgumentError,
    ENOSPC: OutOfPoolMemoryError,
    ENOENT: NotFoundError,
    ENOKEY: NotFoundError,
    EPERM: PermissionDeniedError,
    ECONNECT: ConnectError,
    ECLOSED: ConnectError,
    ESHUTDOWN: ConnectError,
    ESESSION: SessionError,
}


def error(code, message):
    """The exception for a failed call's code and message."""
    return _CLASSES.get(code, PinpoolError)(code, message)


def _err_name(code):
    try:
        return lib().pinpool_err_name(code).decode()
    except OSError:
        return str(code)


class Closable:
    """A with block closes it: the subclass defines close() (idempotent) and closed."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- structures (pinpool.h) -----------------------------------------------------------

c_u64 = ctypes.c_uint64
c_u32 = ctypes.c_uint32
c_i32 = ctypes.c_int32


class Slice_t(ctypes.Structure):
    _fields_ = [("id", c_u64), ("ptr", ctypes.c_void_p), ("size", c_u64),
                ("device_id", c_i32), ("start_offset", c_u64)]


class AllocOpts_t(ctypes.Structure):
    _fields_ = [("device_id", c_i32), ("alignment", c_u64), ("tag", ctypes.c_char_p),
                ("flags", c_u32)]


class ClientUsage_t(ctypes.Structure):
    _fields_ = [("client_id", ctypes.c_char * 64), ("bytes", c_u64), ("slices", c_u32),
                ("device_bytes", c_u64), ("pid", c_i32), ("uid", c_u32)]


class DeviceInfo_t(ctypes.Structure):
    _fields_ = [("device_id", c_i32), ("name", ctypes.c_char * 64), ("capacity_bytes", c_u64),
                ("used_bytes", c_u64), ("free_bytes", c_u64), ("largest_free_extent", c_u64),
                ("num_slices", c_u32)]


MAX_DEVICES = 16


class SpillInfo_t(ctypes.Structure):
    _fields_ = [("tier", ctypes.c_char * 16), ("objects", c_u32), ("objects_resident", c_u32),
                ("objects_spilled", c_u32), ("resident_bytes", c_u64),
                ("spilled_bytes_now", c_u64), ("spills", c_u64), ("bytes_spilled", c_u64),
                ("spill_failures", c_u64), ("restores", c_u64), ("bytes_restored", c_u64),
                ("restore_failures", c_u64), ("spill_gbps", ctypes.c_double),
                ("restore_gbps", ctypes.c_double), ("spill_avg_ms", ctypes.c_double),
                ("restore_avg_ms", ctypes.c_double), ("expired", c_u64),
                ("low_watermark_bytes", c_u64), ("last_error", ctypes.c_char * 256)]


class GpuInfo_t(ctypes.Structure):
    _fields_ = [("device_id", c_i32), ("role", ctypes.c_char * 32), ("device_pool_bytes", c_u64),
                ("gpu_used_bytes", c_u64), ("gpu_total_bytes", c_u64)]


class PoolInfo_t(ctypes.Structure):
    _fields_ = [("capacity_bytes", c_u64), ("ready_bytes", c_u64), ("used_bytes", c_u64),
                ("free_bytes", c_u64), ("largest_free_extent", c_u64), ("chunk_size", c_u64),
                ("num_chunks", c_u32), ("num_slices", c_u32), ("num_clients", c_u32),
                ("fragmentation", ctypes.c_double), ("host_backend", ctypes.c_char * 16),
                ("mode", ctypes.c_char * 16), ("num_kept", c_u32),
                ("pin_seconds", ctypes.c_double), ("num_devices", c_u32),
                ("devices", DeviceInfo_t * MAX_DEVICES), ("num_usage", c_u32),
                ("usage", ctypes.POINTER(ClientUsage_t)), ("spill", SpillInfo_t),
                ("cleaning_bytes", c_u64), ("chunk_replacements", c_u64),
                ("stopped_short", ctypes.c_char * 320), ("num_gpus", c_u32),
                ("gpus", GpuInfo_t * MAX_DEVICES)]


class ArenaOpts_t(ctypes.Structure):
    _fields_ = [("max_bytes", c_u64), ("quantum", c_u64), ("max_leases", c_u32),
                ("tag", ctypes.c_char_p)]


class ArenaBlock_t(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("size", c_u64), ("lease_base", ctypes.c_void_p),
                ("lease_size", c_u64), ("lease_id", c_u64), ("large", c_i32)]


class ArenaStats_t(ctypes.Structure):
    _fields_ = [("lease_size", c_u64), ("max_bytes", c_u64), ("leased_bytes", c_u64),
                ("used_bytes", c_u64), ("requested_bytes", c_u64), ("free_bytes", c_u64),
                ("largest_free", c_u64), ("num_leases", c_u32), ("num_large", c_u32),
                ("num_blocks", c_u32), ("num_free_extents", c_u32),
                ("fragmentation", ctypes.c_double), ("allocs", c_u64), ("frees", c_u64)]


class SwapInfo_t(ctypes.Structure):
    _fields_ = [("state", ctypes.c_int), ("device_id", c_i32), ("num_buffers", c_u32),
                ("bytes", c_u64), ("device_bytes", c_u64), ("host_slice_id", c_u64),
                ("released", c_i32)]


TMS_TAG_MAX = 28  # PINPOOL_TMS_TAG_MAX


class TmsRegion_t(ctypes.Structure):
    _fields_ = [("tag", ctypes.c_char * (TMS_TAG_MAX + 1)), ("backup", c_i32), ("active", c_i32)]


class TmsUsage_t(ctypes.Structure):
    _fields_ = [("allocations", c_u32), ("swap_tags", c_u32), ("paused", c_u32), ("bytes", c_u64),
                ("device_bytes", c_u64), ("host_bytes", c_u64)]


SWAP_RELEASE = 0x1
SWAP_KEEP_HOST = 0x2
SWAP_FREE_HOST = 0x4
SWAP_SPILLABLE = 0x8
SWAP_STATES = ("resident", "pausing", "paused", "resuming")


# ---- loading --------------------------------------------------------------------------

_lib = None
_lock = threading.Lock()


def candidates():
    """Where the library is looked for, in order: $PINPOOL_LIB; the package's own
    copy (pip install puts libpinpool.so and its private libraries there); the
    repository's build/ (the package used from the source tree); the system's."""
    out = []
    env = os.environ.get("PINPOOL_LIB")
    if env:
        out.append(env)
    here = os.path.dirname(os.path.abspath(__file__))
    out.append(os.path.join(here, "libpinpool.so"))
    d = here
    for _ in range(4):  # client/python/pinpool -> the repository's build/
        d = os.path.dirname(d)
        out.append(os.path.join(d, "build", "libpinpool.so"))
    found = ctypes.util.find_library("pinpool")
    if found:
        out.append(found)
    return out


def _declare(L):
    P = ctypes.POINTER
    vp = ctypes.c_void_p
    sig = {
        "pinpool_strerror": (ctypes.c_char_p, [ctypes.c_int]),
        "pinpool_err_name": (ctypes.c_char_p, [ctypes.c_int]),
        "pinpool_version": (ctypes.c_char_p, []),
        "pinpool_connect": (vp, [ctypes.c_char_p]),
        "pinpool_err": (ctypes.c_int, [vp]),
        "pinpool_errmsg": (ctypes.c_char_p, [vp]),
        "pinpool_client_id": (ctypes.c_char_p, [vp]),
        "pinpool_close": (None, [vp]),
        "pinpool_reconnect": (ctypes.c_int, [vp]),
        "pinpool_alloc": (ctypes.c_int, [vp, c_u64, P(AllocOpts_t), P(Slice_t)]),
        "pinpool_free": (ctypes.c_int, [vp, c_u64, P(c_u64)]),
        "pinpool_free_all": (ctypes.c_int, [vp, P(c_u64)]),
        "pinpool_attach": (ctypes.c_int, [vp, ctypes.c_char_p, c_u32, P(Slice_t)]),
        "pinpool_detach": (ctypes.c_int, [vp, c_u64]),
        "pinpool_pool_info": (ctypes.c_int, [vp, P(PoolInfo_t)]),
        "pinpool_pool_info_free": (None, [P(PoolInfo_t)]),
        "pinpool_ping": (ctypes.c_int, [vp]),
        "pinpool_release": (ctypes.c_int, [vp, c_u64, ctypes.c_char_p, c_u64]),
        "pinpool_acquire": (ctypes.c_int, [vp, ctypes.c_char_p, c_u32, P(Slice_t)]),
        "pinpool_put": (ctypes.c_int, [vp, ctypes.c_char_p, ctypes.c_char_p, c_u64, c_u64]),
        "pinpool_get": (ctypes.c_int, [vp, ctypes.c_char_p, vp, c_u64, P(c_u64)]),
        "pinpool_exists": (ctypes.c_int, [vp, ctypes.c_char_p]),
        "pinpool_remove": (ctypes.c_int, [vp, ctypes.c_char_p]),
        "pinpool_arena_create": (ctypes.c_int, [vp, c_u64, P(ArenaOpts_t), P(vp)]),
        "pinpool_arena_alloc": (ctypes.c_int, [vp, c_u64, c_u64, P(vp)]),
        "pinpool_arena_alloc_block": (ctypes.c_int, [vp, c_u64, c_u64, P(ArenaBlock_t)]),
        "pinpool_arena_free": (ctypes.c_int, [vp, vp]),
        "pinpool_arena_stats": (ctypes.c_int, [vp, P(ArenaStats_t)]),
        "pinpool_arena_destroy": (None, [vp]),
        "pinpool_swap_alloc": (ctypes.c_int, [vp, ctypes.c_char_p, c_i32, c_u64, P(c_u64)]),
        "pinpool_swap_register": (ctypes.c_int, [vp, ctypes.c_char_p, c_i32, c_u64, c_u64]),
        "pinpool_swap_pause": (ctypes.c_int, [vp, ctypes.c_char_p, vp, c_u32]),
        "pinpool_swap_resume": (ctypes.c_int, [vp, ctypes.c_char_p, vp, c_u32]),
        "pinpool_swap_wait": (ctypes.c_int, [vp, ctypes.c_char_p]),
        "pinpool_swap_drop": (ctypes.c_int, [vp, ctypes.c_char_p, c_u32]),
        "pinpool_swap_info": (ctypes.c_int, [vp, ctypes.c_char_p, P(SwapInfo_t)]),
        "pinpool_swap_config": (ctypes.c_int, [vp, c_u32, c_u64]),
        "pinpool_swap_free": (ctypes.c_int, [vp, ctypes.c_char_p, c_u64]),
        "pinpool_swap_host_ptr": (ctypes.c_int, [vp, ctypes.c_char_p, c_u64, c_u64, P(vp)]),
        "pinpool_tms_connect": (ctypes.c_int, [ctypes.c_char_p]),
        "pinpool_tms_context": (vp, []),
        "pinpool_tms_errmsg": (ctypes.c_char_p, []),
        "pinpool_tms_set_region": (ctypes.c_int, [P(TmsRegion_t), P(TmsRegion_t)]),
        "pinpool_tms_get_region": (ctypes.c_int, [P(TmsRegion_t)]),
        "pinpool_tms_malloc": (vp, [ctypes.c_ssize_t, ctypes.c_int, vp]),
        "pinpool_tms_free": (None, [vp, ctypes.c_ssize_t, ctypes.c_int, vp]),
        "pinpool_tms_pause": (ctypes.c_int, [ctypes.c_char_p]),
        "pinpool_tms_resume": (ctypes.c_int, [ctypes.c_char_p]),
        "pinpool_tms_set_retain": (None, [ctypes.c_int]),
        "pinpool_tms_get_retain": (ctypes.c_int, []),
        "pinpool_tms_detach": (None, []),
        "pinpool_tms_set_margin": (None, [c_u64]),
        "pinpool_tms_cpu_backup": (ctypes.c_int, [c_u64, c_u64, P(vp)]),
        "pinpool_tms_usage": (ctypes.c_int, [ctypes.c_char_p, P(TmsUsage_t)]),
    }
    for name, (res, args) in sig.items():
        f = getattr(L, name)
        f.restype = res
        f.argtypes = args


def lib():
    """The loaded libpinpool (OSError, listing where it looked, when not found)."""
    global _lib
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is None:
            tried = []
            for path in candidates():
                if os.sep in path and not os.path.exists(path):
                    tried.append(path + " (missing)")
                    continue
                try:
                    L = ctypes.CDLL(path)
                except OSError as e:
                    tried.append(f"{path} ({e})")
                    continue
                _declare(L)
                # torch's CUDAPluggableAllocator loads it again by this path: the same one
                L.pinpool_path = os.path.abspath(path) if os.sep in path else path
                _lib = L
                break
            else:
                raise OSError("libpinpool.so not found: pip install ./client/python (the package"
                              " then carries it), build it with `make`, or set PINPOOL_LIB."
                              " Tried: " + "; ".join(tried))
    return _lib


def strerror(code):
    return lib().pinpool_strerror(code).decode()
