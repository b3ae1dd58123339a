"""ctypes bindings of libpinpool's tensor manifests (pinpool.h, "Tensor manifests") and
the views pinpool.weights makes over attached memory.

Owns: the structure layouts (they must match pinpool.h field for field), the dtype names
between numpy / torch and the format, the views (numpy arrays, torch tensors, CudaTensor)
and what they keep alive (a _Hold in weights.py: never the Weights itself, since numpy
arrays and ctypes buffers are not traversed by the garbage collector).
Never: imports numpy or torch before a call needs them; copies the bytes it wraps.
"""

import ctypes
import errno

from . import _lib
from ._lib import PinpoolError, c_i32, c_u32, c_u64
from .client import Client

MAX_DIMS = 8

SPILLABLE = 0x1
NO_HASH = 0x2
FORCE = 0x4
TENSOR_STRIDED = 0x1
TENSOR_ALIAS = 0x2
KEPT, RELEASED = 1, 2
_C_HOST = -1
_EBADMSG = -errno.EBADMSG


class ManifestError(PinpoolError):
    """A manifest (or its name record) is damaged, or a tensor's bytes differ from its hash
    (verify): the message says which."""


class MismatchError(ValueError):
    """load_into: the module and the manifest disagree; .tensor names the tensor."""

    def __init__(self, message, tensor):
        super().__init__(message)
        self.tensor = tensor


# ---- the C API (pinpool.h) --------------------------------------------------------------

class _TensorDesc(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", c_i32), ("ndim", c_u32),
                ("shape", ctypes.c_int64 * MAX_DIMS), ("strides", ctypes.c_int64 * MAX_DIMS),
                ("flags", c_u32), ("alias_of", c_u32), ("nbytes", c_u64)]


class _Tensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", c_i32), ("ndim", c_u32),
                ("shape", ctypes.c_int64 * MAX_DIMS), ("strides", ctypes.c_int64 * MAX_DIMS),
                ("segment", c_u32), ("offset", c_u64), ("nbytes", c_u64), ("hash", c_u64),
                ("ptr", ctypes.c_void_p), ("device_id", c_i32)]


class _Opts(ctypes.Structure):
    _fields_ = [("device_id", c_i32), ("flags", c_u32), ("segment_bytes", c_u64),
                ("alignment", c_u64), ("metadata", ctypes.c_char_p), ("hash_threads", c_u32)]


class _Info(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * 201), ("version", c_u64), ("device_id", c_i32),
                ("placement", c_u32), ("num_tensors", c_u32), ("num_segments", c_u32),
                ("data_bytes", c_u64), ("manifest_bytes", c_u64), ("hash_algo", c_u32),
                ("content_hash", c_u64), ("created_unix_ns", c_u64),
                ("metadata", ctypes.c_void_p), ("metadata_len", c_u32),
                ("attached_device", c_i32)]


_declared = False


def _L():
    global _declared
    L = _lib.lib()
    if not _declared:
        vp, P, cp = ctypes.c_void_p, ctypes.POINTER, ctypes.c_char_p
        sig = {
            "pinpool_dtype_name": (cp, [ctypes.c_int]),
            "pinpool_dtype_from_name": (ctypes.c_int, [cp]),
            "pinpool_dtype_size": (ctypes.c_int, [ctypes.c_int]),
            "pinpool_manifest_begin": (ctypes.c_int, [vp, cp, P(_Opts), P(vp)]),
            "pinpool_manifest_add": (ctypes.c_int, [vp, P(_TensorDesc), P(c_u32)]),
            "pinpool_manifest_alloc": (ctypes.c_int, [vp]),
            "pinpool_manifest_dest": (ctypes.c_int, [vp, c_u32, P(_Tensor)]),
            "pinpool_manifest_write": (ctypes.c_int, [vp, c_u32, vp, c_u64]),
            "pinpool_manifest_commit": (ctypes.c_int, [vp, P(c_u64)]),
            "pinpool_manifest_abort": (None, [vp]),
            "pinpool_manifest_pub_version": (c_u64, [vp]),
            "pinpool_manifest_open": (ctypes.c_int, [vp, cp, c_u64, P(vp)]),
            "pinpool_manifest_parse": (ctypes.c_int, [vp, ctypes.c_size_t, P(vp), cp,
                                                      ctypes.c_size_t]),
            "pinpool_manifest_bytes": (ctypes.c_int, [vp, P(vp), P(ctypes.c_size_t)]),
            "pinpool_manifest_info": (ctypes.c_int, [vp, P(_Info)]),
            "pinpool_manifest_tensor": (ctypes.c_int, [vp, c_u32, P(_Tensor)]),
            "pinpool_manifest_find": (ctypes.c_int, [vp, cp, P(c_u32)]),
            "pinpool_manifest_attach": (ctypes.c_int, [vp, c_i32]),
            "pinpool_manifest_verify": (ctypes.c_int, [vp, P(c_u32)]),
            "pinpool_manifest_close": (None, [vp]),
            "pinpool_manifest_versions": (ctypes.c_int, [vp, cp, P(c_u64), c_u32, P(c_u32),
                                                         P(c_u64)]),
            "pinpool_manifest_drop": (ctypes.c_int, [vp, cp, c_u64, c_u32]),
            "pinpool_manifest_collect": (ctypes.c_int, [vp, cp, P(c_u32)]),
        }
        for name, (res, args) in sig.items():
            f = getattr(L, name)
            f.restype = res
            f.argtypes = args
        _declared = True
    return L


def _raise(client, rc):
    msg = _L().pinpool_errmsg(client._handle()).decode(errors="replace")
    if rc == _EBADMSG:
        raise ManifestError(rc, msg)
    raise _lib.error(rc, msg)


def _check(client, rc):
    if rc != 0:
        _raise(client, rc)


def _c_device(device):
    if device is None or device == "host":
        return _C_HOST
    if isinstance(device, str) and device.startswith("cuda"):
        return int(device.split(":")[1]) if ":" in device else 0
    if hasattr(device, "type") and hasattr(device, "index"):  # torch.device
        return _C_HOST if device.type == "cpu" else (device.index or 0)
    d = int(device)
    if d < 0:
        raise ValueError(f"device {device}: a GPU index, or None / 'host'")
    return d


class _ClientOf:
    """The client a call uses: the caller's, or one of its own for the call."""

    def __init__(self, client, socket):
        self.own = client is None
        self.client = client if client is not None else Client(socket)

    def __enter__(self):
        return self.client

    def __exit__(self, *exc):
        if self.own:
            self.client.close()


# ---- dtypes -----------------------------------------------------------------------------

_TORCH_NAMES = {"bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "uint16": "U16",
                "int32": "I32", "uint32": "U32", "int64": "I64", "uint64": "U64",
                "float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64",
                "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}
_NUMPY_OF = {"BOOL": "?", "U8": "u1", "I8": "i1", "I16": "<i2", "U16": "<u2", "I32": "<i4",
             "U32": "<u4", "I64": "<i8", "U64": "<u8", "F16": "<f2", "F32": "<f4", "F64": "<f8"}
_ML_DTYPES = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
_RAW = {"BF16": "<u2", "F8_E4M3": "u1", "F8_E5M2": "u1"}  # numpy without ml_dtypes: the bits


def dtype_name(dtype):
    """The format's name ("BF16", "F32", ...) of a torch dtype, numpy dtype or a name."""
    if isinstance(dtype, str):
        up = dtype.upper()
        if _L().pinpool_dtype_from_name(up.encode()) > 0:
            return up
        if dtype.replace("torch.", "") in _TORCH_NAMES:
            return _TORCH_NAMES[dtype.replace("torch.", "")]
    s = str(dtype)
    if s.startswith("torch."):
        n = _TORCH_NAMES.get(s[6:])
        if n is not None:
            return n
    try:
        import numpy as np

        dt = np.dtype(dtype)
        for name, ml in _ML_DTYPES.items():
            if dt.name == ml:
                return name
        for name, code in _NUMPY_OF.items():
            if dt == np.dtype(code):
                return name
    except (TypeError, ImportError):
        pass
    raise TypeError(f"dtype {dtype!r} has no manifest dtype (BOOL, U8..U64, I8..I64, F16, BF16,"
                    " F32, F64, F8_E4M3, F8_E5M2)")


def _code(name):
    return _L().pinpool_dtype_from_name(name.encode())


def _numpy_dtype(name):
    import numpy as np

    if name in _ML_DTYPES:
        try:
            import ml_dtypes

            return np.dtype(getattr(ml_dtypes, _ML_DTYPES[name]))
        except ImportError:
            return np.dtype(_RAW[name])
    return np.dtype(_NUMPY_OF[name])


def _torch_dtype(name):
    import torch

    for tname, n in _TORCH_NAMES.items():
        if n == name and hasattr(torch, tname):
            return getattr(torch, tname)
    raise TypeError(f"this torch has no dtype for {name}")


def _is_torch(t):
    return type(t).__module__.startswith("torch") and hasattr(t, "data_ptr")


# ---- views over attached memory ------------------------------------------------------------

class CudaTensor:
    """A tensor in GPU memory, for consumers without torch: name, shape, dtype (the
    format's name), strides (elements), ptr, device, nbytes, and
    __cuda_array_interface__ (version 3; BF16/F8 as raw unsigned integers).  Keeps its
    Weights (or builder), and so the memory, alive."""

    __slots__ = ("name", "shape", "dtype", "strides", "ptr", "device", "nbytes", "read_only",
                 "_owner")

    def __init__(self, name, shape, dtype, strides, ptr, device, nbytes, read_only, owner):
        self.name, self.shape, self.dtype, self.strides = name, shape, dtype, strides
        self.ptr, self.device, self.nbytes, self.read_only = ptr, device, nbytes, read_only
        self._owner = owner

    @property
    def __cuda_array_interface__(self):
        size = _L().pinpool_dtype_size(_code(self.dtype))
        typestr = _RAW.get(self.dtype, _NUMPY_OF.get(self.dtype))
        return {"shape": tuple(self.shape), "typestr": typestr,
                "data": (self.ptr or 0, bool(self.read_only)),
                "strides": tuple(s * size for s in self.strides), "version": 3}

    def __repr__(self):
        return (f"CudaTensor({self.name!r}, shape={tuple(self.shape)}, dtype={self.dtype},"
                f" device={self.device}, ptr=0x{self.ptr or 0:x})")


class _CudaSegment:
    """A segment's bytes as a 1-D uint8 CUDA array for torch.as_tensor (torch keeps it,
    and its owner, alive as long as any tensor over it lives)."""

    def __init__(self, addr, size, owner):
        self.addr, self.size, self._owner = addr, size, owner

    @property
    def __cuda_array_interface__(self):
        # torch refuses the read-only flag ("should always be False")
        return {"shape": (self.size,), "typestr": "|u1", "data": (self.addr, False),
                "strides": None, "version": 3}


def _tensor_info(L, handle, i, get=None):
    t = _Tensor()
    rc = (get or L.pinpool_manifest_tensor)(handle, i, ctypes.byref(t))
    if rc != 0:
        raise PinpoolError(rc, f"tensor {i}: {_lib.strerror(rc)}")
    return {"name": t.name.decode(), "dtype": L.pinpool_dtype_name(t.dtype).decode(),
            "shape": tuple(t.shape[k] for k in range(t.ndim)),
            "strides": tuple(t.strides[k] for k in range(t.ndim)), "segment": t.segment,
            "offset": t.offset, "nbytes": t.nbytes, "hash": t.hash, "ptr": t.ptr or 0,
            "device": t.device_id}


def _segments(infos):
    """{segment: (lowest address, bytes to cover)} of tensors with bytes (a segment's
    base is the address of its offset 0)."""
    segs = {}
    for t in infos:
        if t["nbytes"] == 0:
            continue
        base = t["ptr"] - t["offset"]
        end = t["offset"] + t["nbytes"]
        old = segs.get(t["segment"])
        segs[t["segment"]] = (base, max(end, old[1] if old else 0))
    return segs


def _views(infos, device, framework, writable, owner):
    """{name: tensor} over attached memory: numpy / torch CPU for the host, torch CUDA or
    CudaTensor for a GPU."""
    out = {}
    segs = _segments(infos)
    if device == _C_HOST and framework != "torch":
        import numpy as np

        bufs = {}
        for s, (base, size) in segs.items():
            b = (ctypes.c_uint8 * size).from_address(base)
            b._owner = owner  # the arrays keep the buffer, the buffer the mapping
            bufs[s] = np.frombuffer(b, dtype=np.uint8)
        for t in infos:
            dt = _numpy_dtype(t["dtype"])
            if t["nbytes"] == 0:
                a = np.zeros(t["shape"], dtype=dt)
            else:
                a = np.ndarray(t["shape"], dtype=dt, buffer=bufs[t["segment"]],
                               offset=t["offset"], strides=tuple(k * dt.itemsize
                                                                 for k in t["strides"]))
            a.flags.writeable = bool(writable)
            out[t["name"]] = a
        return out
    if framework == "cuda" or (device != _C_HOST and not _have_torch()):
        for t in infos:
            out[t["name"]] = CudaTensor(t["name"], t["shape"], t["dtype"], t["strides"],
                                        t["ptr"], device, t["nbytes"], not writable, owner)
        return out
    import torch

    storages = {}
    for s, (base, size) in segs.items():
        if device == _C_HOST:
            b = (ctypes.c_uint8 * size).from_address(base)
            b._owner = owner
            seg = torch.frombuffer(b, dtype=torch.uint8)
        else:
            with torch.cuda.device(device):  # from_blob puts it on the current GPU
                seg = torch.as_tensor(_CudaSegment(base, size, owner), device=f"cuda:{device}")
        storages[s] = seg.untyped_storage()
    dev = torch.device("cpu") if device == _C_HOST else torch.device("cuda", device)
    for t in infos:
        dt = _torch_dtype(t["dtype"])
        if t["nbytes"] == 0:
            out[t["name"]] = torch.zeros(t["shape"], dtype=dt, device=dev)
            continue
        size = torch.empty((), dtype=dt).element_size()
        v = torch.empty(0, dtype=dt, device=dev)
        v.set_(storages[t["segment"]], t["offset"] // size, t["shape"], t["strides"])
        out[t["name"]] = v
    return out


def _have_torch():
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False
