"""pinpool.weights: tensor manifests - weights published once, attached by any engine.

    version = weights.publish("llama-8b", model, device=0)     # or a state dict; device=None: host
    w = weights.attach("llama-8b", device=0)                   # {name: CUDA tensor}, no copy
    weights.load_into(model, "llama-8b")                       # parameters point at them
    with weights.builder("llama-8b", layout, device=0) as b:   # build in place
        b["lm_head.weight"].copy_(t)
    weights.versions("llama-8b"); weights.drop("llama-8b", 1); weights.collect("llama-8b")

Built on the C API of libpinpool (pinpool.h, "Tensor manifests": one implementation of
the format, client/manifest.c): publishing, the commit, reading and checking a manifest,
mapping or copying its bytes are the library's; this module turns the library's pointers
into numpy arrays, torch tensors, or objects with __cuda_array_interface__.

Owns: the dtype names between numpy/torch and the format, the views over attached
memory (each keeps its Weights, and so the mapping, alive), load_into's checks.
Never: copies bytes the library maps (attach is zero-copy where the manifest is on the
asked device; a host manifest asked on a GPU is copied by the library, at PCIe speed);
imports torch or numpy before a call needs them; holds a lock across a library call.

What is and is not enforced: `writable=False` makes numpy arrays read-only
(writeable=False); torch has no read-only tensors, and torch refuses the read-only flag of
__cuda_array_interface__, so torch tensors over host memory are writable and a write
reaches every reader; a device manifest on a vmm device pool (the daemon's default where the
driver supports it) is mapped read-only in every reader, so a write fails in the writing
process (an ipc device pool has no read-only mapping).  Weights.verify() finds a write
(every tensor's XXH3-64 against the manifest).  Objects and kept slices are per uid from
the daemon's Trust work on: a reader of another uid cannot open another uid's manifest.
"""

import ctypes
import json

from . import _lib
from ._lib import PinpoolError, c_u32, c_u64
from ._manifest import (_C_HOST, _EBADMSG, FORCE, KEPT, MAX_DIMS, NO_HASH, SPILLABLE,
                        TENSOR_ALIAS, TENSOR_STRIDED, CudaTensor, ManifestError, MismatchError,
                        _check, _code, _c_device, _ClientOf, _have_torch, _Info, _is_torch, _L,
                        _Opts, _tensor_info, _TensorDesc, _views, dtype_name)
from .client import Client

HOST = None  # device of host manifests (also "host")

# ---- readers ----------------------------------------------------------------------------------

class _Hold:
    """What the tensors of an attach keep alive: the opened manifest and its client.  It
    refers to no tensor (numpy arrays and ctypes buffers are not traversed by the garbage
    collector, so a cycle through them would never be freed)."""

    def __init__(self, client, own, handle):
        self.client, self.own, self.m = client, own, handle

    def close(self):
        m, self.m = self.m, None
        if m is not None:
            _L().pinpool_manifest_close(m)
            if self.own:
                self.client.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Weights(_lib.Closable):
    """An attached version of a manifest: a read-only mapping {tensor name: tensor}.

    Attributes: name, version, device (None for the host, else the GPU the tensors are
    on), info (the manifest's fields), metadata (its text, or the JSON it holds, decoded).
    The mapping stays while this object or any of its tensors lives (then it is
    detached); close() detaches at once (every tensor over it becomes invalid: do it only
    when none is used).  A version stays mapped here until then, whatever newer versions
    are committed meanwhile."""

    def __init__(self, client, own_client, handle, device, framework, writable):
        self._client = client
        self._hold = _Hold(client, own_client, handle)
        self._m = handle
        L = _L()
        info = _Info()
        L.pinpool_manifest_info(handle, ctypes.byref(info))
        self.info = _info_dict(info)
        self.name, self.version = self.info["name"], self.info["version"]
        self.device = None if device == _C_HOST else device
        infos = [_tensor_info(L, handle, i) for i in range(info.num_tensors)]
        self._order = [t["name"] for t in infos]
        self._infos = {t["name"]: t for t in infos}
        self._tensors = _views(infos, device, framework, writable, self._hold)

    metadata = property(lambda self: self.info["metadata"])

    def __getitem__(self, name):
        return self._tensors[name]

    def __iter__(self):
        return iter(self._order)

    def __len__(self):
        return len(self._order)

    def __contains__(self, name):
        return name in self._tensors

    def keys(self):
        return list(self._order)

    def items(self):
        return [(k, self._tensors[k]) for k in self._order]

    def values(self):
        return [self._tensors[k] for k in self._order]

    def tensor_info(self, name):
        """What the manifest says of tensor name: dtype (the format's name), shape,
        strides (elements), segment, offset, nbytes, hash, ptr, device."""
        return dict(self._infos[name])

    def verify(self):
        """Hash every tensor again (XXH3-64, the library's threads; device bytes are read
        back through the host) and compare with the manifest; ManifestError names the
        first tensor whose bytes changed."""
        self._need_open()
        bad = c_u32()
        _check(self._client, _L().pinpool_manifest_verify(self._m, ctypes.byref(bad)))

    def _need_open(self):
        if self._m is None:
            raise ValueError(f"weights '{self.name}' version {self.version} are closed")

    def close(self):
        """Detach: unmap (or free the copy), drop the reader marker; idempotent."""
        self._m = None
        self._tensors = {}
        self._hold.close()

    @property
    def closed(self):
        return self._m is None

    def __repr__(self):
        where = "host" if self.device is None else f"cuda:{self.device}"
        return f"Weights({self.name!r}, version={self.version}, {len(self)} tensors on {where})"


def _info_dict(info):
    meta = ctypes.string_at(info.metadata, info.metadata_len) if info.metadata_len else b""
    try:
        meta = json.loads(meta) if meta else None
    except ValueError:
        meta = meta.decode(errors="replace")
    return {"name": info.name.decode(), "version": info.version,
            "device": None if info.device_id == _C_HOST else info.device_id,
            "placement": "kept" if info.placement == KEPT else "released",
            "num_tensors": info.num_tensors, "num_segments": info.num_segments,
            "data_bytes": info.data_bytes, "manifest_bytes": info.manifest_bytes,
            "hash": "xxh3-64" if info.hash_algo == 1 else None,
            "content_hash": info.content_hash, "created_unix_ns": info.created_unix_ns,
            "metadata": meta}


def attach(name, device=0, writable=False, *, version=None, client=None, socket=None,
           framework=None):
    """Attach version (None: the current one) of manifest name: a Weights mapping of
    tensors.  device: a GPU index (or "cuda:N", a torch.device), or None / "host".
    A manifest kept on that GPU is mapped where it is (no copy); a host manifest is
    mapped for the CPU (device None) or copied to the GPU (device N).  framework: None
    (numpy on the host, torch on a GPU when torch with CUDA is there, else CudaTensor),
    "numpy", "torch", or "cuda" (CudaTensor objects)."""
    if framework not in (None, "numpy", "torch", "cuda"):
        raise ValueError("framework: None, 'numpy', 'torch' or 'cuda'")
    dev = _c_device(device)
    if framework == "numpy" and dev != _C_HOST:
        raise ValueError("numpy arrays are host memory: attach with device=None, or use "
                         "framework 'torch' or 'cuda' on a GPU")
    own = client is None
    c = client if client is not None else Client(socket)
    L = _L()
    h = ctypes.c_void_p()
    try:
        _check(c, L.pinpool_manifest_open(c._handle(), name.encode(), version or 0,
                                          ctypes.byref(h)))
        rc = L.pinpool_manifest_attach(h, dev)
        if rc != 0:
            msg = L.pinpool_errmsg(c._handle()).decode(errors="replace")
            L.pinpool_manifest_close(h)
            h = None
            raise (ManifestError(rc, msg) if rc == _EBADMSG else _lib.error(rc, msg))
        return Weights(c, own, h, dev, framework, writable)
    except BaseException:
        if h:
            L.pinpool_manifest_close(h)
        if own:
            c.close()
        raise


def info(name, version=None, *, client=None, socket=None):
    """The manifest's fields and its tensors (name, dtype, shape, strides, segment,
    offset, nbytes, hash) without attaching it."""
    L = _L()
    with _ClientOf(client, socket) as c:
        h = ctypes.c_void_p()
        _check(c, L.pinpool_manifest_open(c._handle(), name.encode(), version or 0,
                                          ctypes.byref(h)))
        try:
            i = _Info()
            L.pinpool_manifest_info(h, ctypes.byref(i))
            out = _info_dict(i)
            out["tensors"] = [_tensor_info(L, h, k) for k in range(i.num_tensors)]
            for t in out["tensors"]:
                del t["ptr"], t["device"]
            return out
        finally:
            L.pinpool_manifest_close(h)


def versions(name, *, client=None, socket=None):
    """{"current": version, "versions": [committed versions, oldest first]}."""
    L = _L()
    with _ClientOf(client, socket) as c:
        n, cur = c_u32(), c_u64()
        _check(c, L.pinpool_manifest_versions(c._handle(), name.encode(), None, 0,
                                              ctypes.byref(n), ctypes.byref(cur)))
        arr = (c_u64 * max(n.value, 1))()
        _check(c, L.pinpool_manifest_versions(c._handle(), name.encode(), arr, n.value,
                                              ctypes.byref(n), ctypes.byref(cur)))
        return {"current": cur.value, "versions": [arr[i] for i in range(n.value)]}


def drop(name, version=None, force=False, *, client=None, socket=None):
    """Drop one version (not the current one), or with version None every version and the
    name.  PinpoolError (code EBUSY) naming the reader when a live process has the
    version attached, unless force (its mapping then reaches freed memory)."""
    with _ClientOf(client, socket) as c:
        _check(c, _L().pinpool_manifest_drop(c._handle(), name.encode(), version or 0,
                                             FORCE if force else 0))


def drop_old(name, keep=1, *, client=None, socket=None):
    """Drop committed versions older than the newest keep; those a live reader holds are
    left (and listed).  Returns (dropped, left)."""
    dropped, left = [], []
    with _ClientOf(client, socket) as c:
        vs = versions(name, client=c)
        for v in vs["versions"][:-keep] if keep > 0 else vs["versions"]:
            if v == vs["current"]:
                continue
            try:
                drop(name, v, client=c)
                dropped.append(v)
            except PinpoolError as e:
                if e.code != _lib.EBUSY:
                    raise
                left.append(v)
    return dropped, left


def collect(name, *, client=None, socket=None):
    """Free what publishers of name that died before their commit left; returns how
    many versions."""
    with _ClientOf(client, socket) as c:
        n = c_u32()
        _check(c, _L().pinpool_manifest_collect(c._handle(), name.encode(), ctypes.byref(n)))
        return n.value


# ---- publishing ------------------------------------------------------------------------------

def _layout_entries(layout):
    """[(name, shape, dtype name, strides or None, alias index or None)] from a layout:
    {name: (shape, dtype)} / {name: tensor or array} / [(name, shape, dtype)]."""
    items = layout.items() if hasattr(layout, "items") else [(n, (s, d)) for n, s, d in layout]
    out = []
    for name, spec in items:
        if hasattr(spec, "shape") and hasattr(spec, "dtype"):
            shape, dt = tuple(spec.shape), spec.dtype
        else:
            shape, dt = spec
        out.append((str(name), tuple(int(x) for x in shape), dtype_name(dt), None, None))
    return out


class Builder(_lib.Closable):
    """A version being published (weights.builder): b[name] is the destination of a
    tensor (numpy array for a host manifest; torch CUDA tensor, or CudaTensor without
    torch, for a device one), valid until the commit or abort (the publisher's mapping
    goes then: attach to read the version); b.write(name, array) copies host bytes there.  Leaving the
    with block commits (b.version then holds the version); an exception aborts (the
    slices are freed, the previous version stays current)."""

    def __init__(self, name, entries, device=0, *, client=None, socket=None, spillable=False,
                 metadata=None, hash=True, segment_bytes=0, alignment=0, hash_threads=0,
                 framework=None):
        self.name = name
        self._dev = _c_device(device)
        self._own = client is None
        self._client = client if client is not None else Client(socket)
        self._pub = None
        self.version = None
        L = _L()
        meta = metadata if metadata is None or isinstance(metadata, str) else json.dumps(metadata)
        opts = _Opts(self._dev, (SPILLABLE if spillable else 0) | (0 if hash else NO_HASH),
                     segment_bytes, alignment, meta.encode() if meta is not None else None,
                     hash_threads)
        pub = ctypes.c_void_p()
        try:
            _check(self._client, L.pinpool_manifest_begin(self._client._handle(), name.encode(),
                                                          ctypes.byref(opts), ctypes.byref(pub)))
            self._pub = pub
            self.version = L.pinpool_manifest_pub_version(pub)
            self._index = {}
            for tname, shape, dt, strides, alias in entries:
                d = _TensorDesc()
                d.name = tname.encode()
                d.dtype = _code(dt)
                if len(shape) > MAX_DIMS:
                    raise ValueError(f"tensor '{tname}': {len(shape)} dimensions (at most 8)")
                d.ndim = len(shape)
                for k, x in enumerate(shape):
                    d.shape[k] = x
                if strides is not None:
                    d.flags |= TENSOR_STRIDED
                    for k, x in enumerate(strides):
                        d.strides[k] = x
                if alias is not None:
                    d.flags |= TENSOR_ALIAS
                    d.alias_of = alias
                idx = c_u32()
                _check(self._client, L.pinpool_manifest_add(pub, ctypes.byref(d), ctypes.byref(idx)))
                self._index[tname] = idx.value
            _check(self._client, L.pinpool_manifest_alloc(pub))
            infos = [_tensor_info(L, pub, i, L.pinpool_manifest_dest)
                     for i in range(len(entries))]
            if self._dev == _C_HOST:
                fw = "torch" if framework == "torch" else None
            else:
                fw = "torch" if framework != "cuda" and _have_torch() else "cuda"
            self._dests = _views(infos, self._dev, fw, True, None)
        except BaseException:
            self.abort()
            raise

    def __getitem__(self, name):
        return self._dests[name]

    def keys(self):
        return list(self._index)

    def write(self, name, data):
        """Copy data (bytes, a numpy array or a CPU tensor: its bytes as laid out
        contiguously) into tensor name (memcpy, or cuMemcpyHtoD on a GPU)."""
        if _is_torch(data):
            data = data.detach().contiguous().cpu()
            ptr, n = data.data_ptr(), data.numel() * data.element_size()
            keep = data
        else:
            import numpy as np

            keep = np.ascontiguousarray(data) if not isinstance(data, (bytes, bytearray)) else data
            if isinstance(keep, (bytes, bytearray)):
                buf = ctypes.create_string_buffer(bytes(keep), len(keep))
                ptr, n, keep = ctypes.addressof(buf), len(data), buf
            else:
                ptr, n = keep.ctypes.data, keep.nbytes
        _check(self._client, _L().pinpool_manifest_write(self._pub, self._index[name], ptr, n))
        del keep

    def commit(self):
        """Hash, write the manifest, make it current; returns the version."""
        if self._pub is None:
            raise ValueError("this builder is committed or aborted already")
        if self._dev != _C_HOST and _have_torch():
            import torch

            torch.cuda.synchronize(self._dev)  # copies queued on torch's streams
        pub, self._pub = self._pub, None
        self._dests = {}
        v = c_u64()
        try:
            _check(self._client, _L().pinpool_manifest_commit(pub, ctypes.byref(v)))
        finally:
            if self._own:
                self._client.close()
        self.version = v.value
        return self.version

    def abort(self):
        """Give the version up (its slices freed); idempotent."""
        pub, self._pub = self._pub, None
        self._dests = {}
        if pub is not None:
            _L().pinpool_manifest_abort(pub)
        if self._own and not self._client.closed:
            self._client.close()

    def __exit__(self, exc_type, *exc):
        if exc_type is None and self._pub is not None:
            self.commit()
        else:
            self.abort()

    def close(self):
        self.abort()

    @property
    def closed(self):
        return self._pub is None


def builder(name, layout, device=0, **kwargs):
    """A Builder of a new version of name with the tensors of layout ({name: (shape,
    dtype)}, {name: tensor-or-array}, or [(name, shape, dtype)]).  kwargs: client,
    socket, spillable (host only: released segments the daemon may spill), metadata (str
    or JSON-able), hash (False: no tensor hashes), segment_bytes, alignment, hash_threads,
    framework (host destinations: None for numpy arrays, "torch" for CPU tensors; device
    ones: torch CUDA tensors where torch is, "cuda" for CudaTensor)."""
    return Builder(name, _layout_entries(layout), device, **kwargs)


def _state_dict(obj):
    sd = obj.state_dict() if hasattr(obj, "state_dict") and callable(obj.state_dict) else obj
    if not hasattr(sd, "items"):
        raise TypeError("publish takes a module (with state_dict()) or a mapping of tensors")
    return list(sd.items())


def publish(name, module_or_state_dict, device=0, **kwargs):
    """Publish a new version of name from a torch module, a state dict, or a mapping of
    numpy arrays, into device slices of GPU device (None / "host": the host pool); the
    version becomes current when this returns it.  Tensors that are the same view of the
    same memory (tied weights) are published once and share their bytes; other tensors
    are stored contiguously.  kwargs as builder()."""
    items = _state_dict(module_or_state_dict)
    entries, first = [], {}
    for i, (k, t) in enumerate(items):
        if _is_torch(t):
            key = (t.data_ptr(), str(t.dtype), tuple(t.shape), tuple(t.stride()), str(t.device))
        else:
            import numpy as np

            t = np.asarray(t)
            ai = t.__array_interface__
            key = (ai["data"][0], t.dtype.str, t.shape, t.strides, "cpu")
        alias = first.get(key) if key[0] else None
        if alias is None and key[0]:
            first[key] = i
        entries.append((str(k), tuple(int(x) for x in t.shape), dtype_name(t.dtype), None, alias))
    if any(_is_torch(t) for _, t in items):
        kwargs.setdefault("framework", "torch")  # copy_ straight into the pool's memory
    b = Builder(name, entries, device, **kwargs)
    try:
        for (k, t), (_, _, _, _, alias) in zip(items, entries):
            if alias is not None:
                continue
            dst = b[str(k)]
            if _is_torch(t) and _is_torch(dst):
                dst.copy_(t.detach())  # H2D, D2H, D2D or a CPU copy, by torch
            elif isinstance(dst, CudaTensor) or _is_torch(dst) or _is_torch(t):
                b.write(str(k), t)     # host bytes, by the library
            else:
                import numpy as np

                src = np.asarray(t)
                np.copyto(dst, src if src.dtype == dst.dtype else src.view(dst.dtype))
        return b.commit()
    except BaseException:
        b.abort()
        raise


# ---- load_into -------------------------------------------------------------------------------

def _mismatch(w, tensor, what):
    return MismatchError(f"load_into from manifest '{w.name}' version {w.version}: tensor "
                         f"'{tensor}' {what}", tensor)


def _check_layout(w, expected, strict):
    """expected: {key: (dtype name, shape)}.  Raises MismatchError for the first key
    missing from the manifest, extra in it (strict), or of another dtype or shape."""
    for key, (dt, shape) in expected.items():
        if key not in w:
            raise _mismatch(w, key, "is not in the manifest (the module has it)")
        t = w.tensor_info(key)
        if t["dtype"] != dt:
            raise _mismatch(w, key, f"is {t['dtype']} in the manifest, {dt} in the module")
        if tuple(t["shape"]) != tuple(shape):
            raise _mismatch(w, key, f"has shape {tuple(t['shape'])} in the manifest, "
                                    f"{tuple(shape)} in the module")
    if strict:
        for key in w.keys():
            if key not in expected:
                raise _mismatch(w, key, "is in the manifest but not in the module")


def _module_slots(module):
    """[(key, owning module, attribute, is parameter, current value)] in state_dict order:
    parameters and persistent buffers of every submodule (shared ones under each name)."""
    slots = []
    for prefix, mod in module.named_modules(remove_duplicate=False):
        pre = prefix + "." if prefix else ""
        for pname, p in mod._parameters.items():
            if p is not None:
                slots.append((pre + pname, mod, pname, True, p))
        skip = getattr(mod, "_non_persistent_buffers_set", set())
        for bname, b in mod._buffers.items():
            if b is not None and bname not in skip:
                slots.append((pre + bname, mod, bname, False, b))
    return slots


def load_into(module, name, *, strict=True, **attach_kwargs):
    """Point module's parameters and buffers at the tensors of manifest name (attach's
    keyword arguments: device, writable, version, client, socket, framework), without a
    copy; module may also be a dict of arrays/tensors, whose values are replaced.  Every
    key, dtype and shape is checked first (MismatchError naming the tensor: missing,
    extra when strict, dtype, shape) and nothing changes unless all match.  Tied
    parameters stay tied.  Returns the Weights (the tensors keep it alive)."""
    w = attach(name, **attach_kwargs)
    try:
        if hasattr(module, "named_modules"):
            slots = _module_slots(module)
            expected = {}
            for key, _, _, _, cur in slots:
                expected.setdefault(key, (dtype_name(cur.dtype), tuple(cur.shape)))
            _check_layout(w, expected, strict)
            import torch

            made = {}
            with torch.no_grad():
                for key, mod, attr, is_param, cur in slots:
                    t = w[key]
                    if is_param:
                        if id(cur) not in made:
                            made[id(cur)] = torch.nn.Parameter(t, requires_grad=cur.requires_grad)
                        mod._parameters[attr] = made[id(cur)]
                    else:
                        mod._buffers[attr] = t
        else:
            expected = {k: (v.dtype if isinstance(v, CudaTensor) else dtype_name(v.dtype),
                            tuple(v.shape)) for k, v in module.items()}
            _check_layout(w, expected, strict)
            for k in list(module.keys()):
                module[k] = w[k]
    except BaseException:
        w.close()
        raise
    return w


__all__ = ["publish", "builder", "attach", "load_into", "info", "versions", "drop", "drop_old",
           "collect", "dtype_name", "Weights", "Builder", "CudaTensor", "ManifestError",
           "MismatchError", "HOST"]
