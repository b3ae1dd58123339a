"""pinpool.torch_memory_saver: torch_memory_saver 0.0.10's API, with the memory in pinpool.

A program switches by its import line only:

    from torch_memory_saver import torch_memory_saver          # before
    from pinpool.torch_memory_saver import torch_memory_saver  # after

    with torch_memory_saver.region(tag="weights", enable_cpu_backup=True):
        w = torch.empty(n, dtype=torch.bfloat16, device="cuda")
    torch_memory_saver.pause("weights")    # GPU memory given back, addresses kept
    torch_memory_saver.resume("weights")   # mapped again at the same addresses, bytes back

Tensors torch allocates inside a region come from libpinpool (torch's
CUDAPluggableAllocator over pinpool_tms_malloc / pinpool_tms_free behind one
torch.cuda.MemPool per tag, backup kind and GPU, as the original's "torch" hook
mode): each is a CUDA VMM allocation; pause unmaps its memory and keeps its
addresses.  With enable_cpu_backup the bytes go to a host copy in the node's
pinpool daemon (no pinning in this process: the daemon's pool is pinned
already), kept as "swap:TAG" (so `pinpool info` and Client.swap_usage() show it,
and a restarted process can resume it); with enable_disk_backup the copy is
released to the daemon, which may spill it to its tier; without either the
contents are not kept.  pause and resume return when done, as the original.

Differences, on purpose (README "Using pinpool from torch"):
  * hook_mode "preload" is accepted and works as "torch": no LD_PRELOAD is
    needed, and cudaMalloc calls made inside a region by other libraries (NCCL,
    cuBLAS workspaces) stay outside the region, as torch allocations outside a
    region do.  configure_subprocess() is there and sets nothing.
  * cuda_graph() works in either mode (the original needs "preload"): the
    graph's memory pool is the region's pool of libpinpool memory.
  * Errors raise (pinpool.PinpoolError subclasses) where the original exits the
    process: pausing a paused tag, resuming a resident one.
  * Tags are at most 28 printable characters without spaces or '~'.
  * cpu_backup_backend ("pinned" or "mmap") is checked and otherwise unused:
    the backup is always in pinpool's pool.  set_disk_backup_dir() makes the
    directory and warns: pinpool's disk backups are the daemon's spill tier
    (`pinpool serve --spill-tier file://DIR`).
  * resume(tag) in a process where tag is resident but another process paused
    it (and exited) brings that copy back, when this process made the same
    allocations in the same order under the tag (the same program at the same
    point does); sizes are checked.

Extras: `socket` (set before the first region; default $PINPOOL_SOCKET, else the
daemon's default socket) and usage(tag=None).

Importing needs neither torch nor the library; regions, cuda_graph, disable and
get_cpu_backup need torch; pause and resume need only the library.
"""

import atexit
import contextlib
import ctypes
import logging
import os
import threading
import warnings

from . import _lib

logger = logging.getLogger(__name__)

_TAG_DEFAULT = "default"
NO_BACKUP, CPU_BACKUP, DISK_BACKUP = 0, 1, 2
HOOK_MODES = ("preload", "torch")
CPU_BACKUP_BACKENDS = ("mmap", "pinned")


def _torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError("pinpool.torch_memory_saver needs torch for regions, cuda_graph, disable "
                          "and get_cpu_backup (pip install torch)") from e
    return torch


def _check(rc, L):
    if rc != 0:
        raise _lib.error(rc, L.pinpool_tms_errmsg().decode(errors="replace"))


class TorchMemorySaver:
    """torch_memory_saver 0.0.10's TorchMemorySaver; the module's torch_memory_saver
    is the process's one instance."""

    def __init__(self):
        self._impl_ctor_kwargs = {}
        self._impl = None
        self.socket = None

    @contextlib.contextmanager
    def region(self, tag: str = _TAG_DEFAULT, enable_cpu_backup: bool = False,
               enable_disk_backup: bool = False, cpu_backup_backend=None):
        """Tensors torch allocates on the current GPU inside are pauseable under tag.
        enable_cpu_backup: pause keeps their bytes in the daemon's pool;
        enable_disk_backup: in the daemon, which may spill them to its tier (not with
        enable_cpu_backup); neither: the contents are not kept."""
        _validate_backend(enable_cpu_backup, cpu_backup_backend)
        assert not (enable_cpu_backup and enable_disk_backup), \
            "enable_cpu_backup and enable_disk_backup are mutually exclusive"
        self._ensure_initialized()
        with self._impl.region(tag, _backup(enable_cpu_backup, enable_disk_backup)):
            yield

    @contextlib.contextmanager
    def cuda_graph(self, cuda_graph, pool=None, stream=None, capture_error_mode="global",
                   tag: str = _TAG_DEFAULT, enable_cpu_backup: bool = False,
                   cpu_backup_backend=None):
        """torch.cuda.graph(cuda_graph, pool, stream, capture_error_mode), with the
        graph's memory pauseable under tag.  pool: another graph's pool() or a
        torch.cuda.graph_pool_handle(), shared as torch shares it."""
        _validate_backend(enable_cpu_backup, cpu_backup_backend)
        self._ensure_initialized()
        with self._impl.cuda_graph(cuda_graph, pool, stream, capture_error_mode, tag,
                                   _backup(enable_cpu_backup, False)):
            yield

    @contextlib.contextmanager
    def disable(self):
        """Inside a region: what torch allocates here is ordinary torch memory."""
        self._ensure_initialized()
        with self._impl.disable():
            yield

    def pause(self, tag=None):
        """Pause tag's memory (None: every tag's): the GPU memory goes back, the
        addresses stay; returns when done."""
        self._ensure_initialized()
        self._impl.step(self._impl.L.pinpool_tms_pause, tag)

    def resume(self, tag=None):
        """Map tag's memory again (None: every tag's) at the same addresses, with the
        backed-up bytes; returns when done."""
        self._ensure_initialized()
        self._impl.step(self._impl.L.pinpool_tms_resume, tag)

    @property
    def enabled(self):
        return True

    @property
    def hook_mode(self):
        raise AttributeError("hook_mode can only be set")

    @hook_mode.setter
    def hook_mode(self, hook_mode):
        if hook_mode not in HOOK_MODES:
            raise ValueError(f"hook_mode must be one of {HOOK_MODES}, not {hook_mode!r}")
        if self._impl is not None:
            raise RuntimeError("set hook_mode before the first use of torch_memory_saver")
        if hook_mode == "preload":
            warnings.warn("pinpool.torch_memory_saver runs hook_mode='preload' as 'torch': only "
                          "torch's allocations inside a region are pauseable, and no LD_PRELOAD "
                          "is needed", stacklevel=2)
        self._impl_ctor_kwargs["hook_mode"] = hook_mode

    @property
    def memory_margin_bytes(self):
        raise NotImplementedError("Only setter is supported")

    @memory_margin_bytes.setter
    def memory_margin_bytes(self, value):
        value = int(value)
        if value < 0:
            raise ValueError(f"memory_margin_bytes must be >= 0, not {value}")
        self._ensure_initialized()
        self._impl.L.pinpool_tms_set_margin(value)

    @property
    def retain_cpu_backup(self):
        self._ensure_initialized()
        return bool(self._impl.L.pinpool_tms_get_retain())

    @retain_cpu_backup.setter
    def retain_cpu_backup(self, value):
        self._ensure_initialized()
        self._impl.L.pinpool_tms_set_retain(1 if value else 0)

    def get_cpu_backup(self, x, zero_copy: bool = False):
        """The CPU backup of tensor x (allocated in a region) as a CPU tensor of its
        dtype and shape: while paused with enable_cpu_backup, or after a resume
        with retain_cpu_backup; None when there is none (resident, or a disk
        backup).  zero_copy: a view of the backup itself (valid until it is freed)."""
        self._ensure_initialized()
        return self._impl.get_cpu_backup(x, zero_copy)

    def set_disk_backup_dir(self, path: str):
        """Makes the directory; pinpool's disk backups live in the daemon's spill tier."""
        self._ensure_initialized()
        os.makedirs(path, exist_ok=True)
        warnings.warn(f"pinpool.torch_memory_saver does not write disk backups to {path}: they are "
                      "released to the pinpool daemon, which spills them to its tier (pinpool serve "
                      "--spill-tier file://DIR)", stacklevel=2)

    def usage(self, tag=None):
        """What tag (None: every tag) holds now in this process: allocations, bytes
        (as torch asked), device_bytes (mapped now), host_bytes (copies held here),
        paused (swap tags paused), swap_tags."""
        self._ensure_initialized()
        u = _lib.TmsUsage_t()
        L = self._impl.L
        _check(L.pinpool_tms_usage(_tag_arg(tag), ctypes.byref(u)), L)
        return {name: getattr(u, name) for name, _ in _lib.TmsUsage_t._fields_}

    def _ensure_initialized(self):
        if self._impl is not None:
            return
        self._impl = _Impl(socket=self.socket, **self._impl_ctor_kwargs)
        del self._impl_ctor_kwargs


def _backup(cpu, disk):
    return CPU_BACKUP if cpu else DISK_BACKUP if disk else NO_BACKUP


def _validate_backend(enable_cpu_backup, cpu_backup_backend):
    if cpu_backup_backend is None:
        return
    if not enable_cpu_backup:
        raise ValueError("cpu_backup_backend requires enable_cpu_backup=True")
    if cpu_backup_backend not in CPU_BACKUP_BACKENDS:
        raise ValueError(f"cpu_backup_backend must be mmap or pinned, not {cpu_backup_backend!r}")


def _tag_arg(tag):
    if tag is None or tag == "":  # the original: a falsy tag means every tag
        return None
    if not isinstance(tag, str):
        raise TypeError(f"a tag is a str, not {type(tag).__name__}")
    return tag.encode()


class _Impl:
    """The library, the process's connection, torch's allocator and the pools."""

    def __init__(self, socket=None, hook_mode="torch"):
        self.L = _lib.lib()
        self.socket = socket
        self.hook_mode = hook_mode
        self._lock = threading.Lock()
        self._connected = False
        self._allocator = None
        self._pools = {}        # (tag, backup, device) -> torch.cuda.MemPool
        self._graph_pools = {}  # (foreign pool handle, tag, backup, device) -> MemPool
        self._ours = set()      # ids of our pools
        # Per thread: how many of our pools are in use (region(), cuda_graph()),
        # and disable()'s pools waiting for the outermost one to end: torch
        # asserts that no pool is in use when a MemPool is destroyed.
        self._t = threading.local()

    def _connect(self):
        if not self._connected:
            _check(self.L.pinpool_tms_connect(self.socket.encode() if self.socket else None), self.L)
            self._connected = True
            # atexit runs before the interpreter frees torch's pools: the
            # copies of paused tags stay in the daemon for another process.
            atexit.register(self.L.pinpool_tms_detach)

    def _region_t(self, tag, backup, active):
        if not isinstance(tag, str):
            raise TypeError(f"a tag is a str, not {type(tag).__name__}")
        r = _lib.TmsRegion_t()
        raw = tag.encode()
        if len(raw) > _lib.TMS_TAG_MAX:
            raise ValueError(f"a torch_memory_saver tag is 1 to {_lib.TMS_TAG_MAX} characters with "
                             f"pinpool (got {len(raw)}: {tag[:40]!r})")
        r.tag, r.backup, r.active = raw, backup, 1 if active else 0
        return r

    @contextlib.contextmanager
    def config(self, tag, backup, active=True):
        """The calling thread's region is (tag, backup, active) inside; the one
        before is back after."""
        new, old = self._region_t(tag, backup, active), _lib.TmsRegion_t()
        _check(self.L.pinpool_tms_set_region(ctypes.byref(new), ctypes.byref(old)), self.L)
        try:
            yield
        finally:
            self.L.pinpool_tms_set_region(ctypes.byref(old), None)

    def current(self):
        r = _lib.TmsRegion_t()
        self.L.pinpool_tms_get_region(ctypes.byref(r))
        return r

    def _torch_ready(self):
        torch = _torch()
        if "expandable_segments:True" in os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""):
            raise RuntimeError("torch_memory_saver does not work with "
                               "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True")
        with self._lock:
            self._connect()
            if self._allocator is None:
                from torch.cuda.memory import CUDAPluggableAllocator
                self._allocator = CUDAPluggableAllocator(self.L.pinpool_path, "pinpool_tms_malloc",
                                                         "pinpool_tms_free")
        return torch

    def _pool(self, torch, key, table):
        with self._lock:
            pool = table.get(key)
            if pool is None:
                pool = table[key] = torch.cuda.MemPool(allocator=self._allocator.allocator())
                self._ours.add(tuple(pool.id))
            return pool

    @contextlib.contextmanager
    def region(self, tag, backup):
        self._region_t(tag, backup, True)  # the tag's errors before anything else
        torch = self._torch_ready()
        device = torch.cuda.current_device()
        pool = self._pool(torch, (tag, backup, device), self._pools)
        with self._in_pool():
            with torch.cuda.use_mem_pool(pool):
                with self.config(tag, backup):
                    yield

    @contextlib.contextmanager
    def _in_pool(self):
        t = self._t
        t.depth = getattr(t, "depth", 0) + 1
        try:
            yield
        finally:
            t.depth -= 1
            if t.depth == 0:
                t.disabled = []  # no pool in use now: disable()'s pools may go

    @contextlib.contextmanager
    def cuda_graph(self, graph, pool, stream, capture_error_mode, tag, backup):
        self._region_t(tag, backup, True)
        torch = self._torch_ready()
        device = torch.cuda.current_device()
        if pool is None:
            mem = self._pool(torch, (tag, backup, device), self._pools)
        elif tuple(pool) in self._ours:
            mem = None  # another graph's pool: ours already
        else:  # a torch.cuda.graph_pool_handle(): graphs sharing it share one of ours
            mem = self._pool(torch, (tuple(pool), tag, backup, device), self._graph_pools)
        pool_id = mem.id if mem is not None else pool
        with self._in_pool():
            with torch.cuda.graph(graph, pool=pool_id, stream=stream,
                                  capture_error_mode=capture_error_mode):
                with self.config(tag, backup):
                    yield

    @contextlib.contextmanager
    def disable(self):
        torch = _torch()
        r = self.current()
        if not r.active:
            raise RuntimeError("disable() should be called only inside a region")
        with self.config(r.tag.decode(), r.backup, active=False):
            # A pool of its own, as the original's, so that no block of a
            # region is reused; destroyed once no pool of ours is in use.
            pool = torch.cuda.MemPool()
            with torch.cuda.use_mem_pool(pool):
                yield
            t = self._t
            if getattr(t, "depth", 0):
                t.disabled = getattr(t, "disabled", []) + [pool]
            del pool

    def step(self, fn, tag):
        _check(fn(_tag_arg(tag)), self.L)

    def get_cpu_backup(self, x, zero_copy):
        torch = _torch()
        assert x.is_cuda, f"{x.device=}"
        assert x.is_contiguous(), f"{x.shape=} {x.stride()=} {x.dtype=}"
        nbytes = x.nbytes
        host = ctypes.c_void_p()
        _check(self.L.pinpool_tms_cpu_backup(x.data_ptr(), nbytes, ctypes.byref(host)), self.L)
        if not host.value:
            return None
        buf = (ctypes.c_uint8 * nbytes).from_address(host.value)
        ans = torch.frombuffer(buf, dtype=torch.uint8).view(x.dtype).view(x.shape)
        return ans if zero_copy else ans.clone()


@contextlib.contextmanager
def configure_subprocess():
    """The original sets LD_PRELOAD for its "preload" mode; pinpool needs none."""
    yield


torch_memory_saver = TorchMemorySaver()

__all__ = ["TorchMemorySaver", "torch_memory_saver", "configure_subprocess"]
