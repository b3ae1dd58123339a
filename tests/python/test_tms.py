"""pinpool.torch_memory_saver without a GPU: its API surface against
torch_memory_saver 0.0.10's (names, parameters, defaults, properties), the
argument errors it raises before touching torch or the daemon, and then its
regions, pools, tags, nesting, disable, cuda_graph, backups and a resume in a
new process, with a stand-in torch (tests/python/torch_stub: the few torch
calls the module makes) over the stand-in driver (tests/mock/libcuda.c, where
device memory is host memory, so the bytes are checked with ctypes).  Real
torch on a GPU: tests/gpu/test_tms.py.
"""
import importlib
import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pinpool
from conftest import REPO, mock_cuda_daemon

HERE = Path(__file__).resolve().parent
STUB = HERE / "torch_stub"


def fresh():
    import pinpool.torch_memory_saver as m
    return importlib.reload(m)


def has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# torch_memory_saver 0.0.10 (PyPI wheel, torch_memory_saver/entrypoint.py): the
# public methods with their parameters and defaults, and the properties.
ORIGINAL = {
    "region": [("tag", "default"), ("enable_cpu_backup", False), ("enable_disk_backup", False),
               ("cpu_backup_backend", None)],
    "cuda_graph": [("cuda_graph", inspect.Parameter.empty), ("pool", None), ("stream", None),
                   ("capture_error_mode", "global"), ("tag", "default"), ("enable_cpu_backup", False),
                   ("cpu_backup_backend", None)],
    "disable": [],
    "pause": [("tag", None)],
    "resume": [("tag", None)],
    "get_cpu_backup": [("x", inspect.Parameter.empty), ("zero_copy", False)],
    "set_disk_backup_dir": [("path", inspect.Parameter.empty)],
}
PROPERTIES = ("enabled", "hook_mode", "memory_margin_bytes", "retain_cpu_backup")


def test_api_surface_is_the_original():
    m = fresh()
    assert isinstance(m.torch_memory_saver, m.TorchMemorySaver)
    assert callable(m.configure_subprocess)
    for name, params in ORIGINAL.items():
        sig = inspect.signature(getattr(m.TorchMemorySaver, name))
        got = [(p.name, p.default) for p in list(sig.parameters.values())[1:]]
        assert got == params, f"{name}{sig}"
    for name in PROPERTIES:
        assert isinstance(getattr(m.TorchMemorySaver, name), property), name
    assert m.torch_memory_saver.enabled is True
    with m.configure_subprocess():
        pass
    assert "torch" not in sys.modules or has_torch(), "importing the module must not need torch"


def test_argument_errors():
    m = fresh()
    t = m.torch_memory_saver
    with pytest.raises(ValueError, match="requires enable_cpu_backup=True"):
        with t.region(cpu_backup_backend="pinned"):
            pass
    with pytest.raises(ValueError, match="mmap or pinned"):
        with t.region(enable_cpu_backup=True, cpu_backup_backend="cuda"):
            pass
    with pytest.raises(AssertionError, match="mutually exclusive"):
        with t.region(enable_cpu_backup=True, enable_disk_backup=True):
            pass
    with pytest.raises(ValueError, match="hook_mode"):
        t.hook_mode = "ld"
    with pytest.raises(AttributeError):
        t.hook_mode
    with pytest.warns(UserWarning, match="as 'torch'"):
        t.hook_mode = "preload"
    t.hook_mode = "torch"
    with pytest.raises(NotImplementedError, match="Only setter"):
        t.memory_margin_bytes
    with pytest.raises(ValueError, match=">= 0"):
        t.memory_margin_bytes = -1
    with pytest.raises(ValueError, match="1 to 28"):
        with t.region(tag="x" * 29):
            pass
    with pytest.raises(TypeError, match="str"):
        t.pause(3)
    with pytest.raises(pinpool.InvalidArgumentError, match="printable"):
        t.pause("two words")
    t.pause()   # nothing was allocated: nothing to do, as the original
    t.resume("nothing")
    with pytest.raises(RuntimeError, match="before the first use"):
        t.hook_mode = "torch"
    if not has_torch():
        with pytest.raises(ImportError, match="needs torch"):
            with t.region():
                pass


CHILD = textwrap.dedent(r"""
    import ctypes, os, subprocess, sys, warnings
    import torch
    import pinpool
    from pinpool.torch_memory_saver import torch_memory_saver as tms

    sock, mode = sys.argv[1], sys.argv[2]
    tms.socket = sock
    MiB = 1 << 20
    L = pinpool._lib.lib()
    mock = ctypes.CDLL("libcuda.so.1")
    mock.mock_cuda_device_bytes.restype = ctypes.c_ulonglong

    def pattern(n, seed):
        return bytes((i * 131 + seed) & 0xff for i in range(256)) * (n // 256)

    def used():
        with pinpool.Client(sock) as c:
            return c.info()["used_bytes"]

    if mode == "pause-exit":   # a worker that pauses and is restarted
        with tms.region(tag="worker", enable_cpu_backup=True):
            w = torch.empty(4 * MiB, device="cuda")
        w.fill_bytes(pattern(4 * MiB, 9))
        tms.pause("worker")
        print("ok")
        os._exit(0)
    if mode == "empty":   # what the parent (no CUDA) cannot ask itself
        with pinpool.Client(sock) as c:
            assert c.info()["used_bytes"] == 0 and c.swap_usage() == {}, c.info()
        print("ok")
        sys.exit(0)
    if mode == "kept":
        with pinpool.Client(sock) as c:
            assert c.swap_usage() == {"worker": 4 * MiB}, c.swap_usage()
        print("ok")
        sys.exit(0)
    if mode == "resume-new":
        with tms.region(tag="worker", enable_cpu_backup=True):
            w = torch.empty(4 * MiB, device="cuda")
        tms.resume("worker")
        assert w.tobytes() == pattern(4 * MiB, 9), "a new process resumes the paused bytes"
        print("ok")
        sys.exit(0)

    # regions, tags, nesting, disable
    outside = torch.empty(2 * MiB, device="cuda")
    with tms.region(tag="weights", enable_cpu_backup=True):
        a = torch.empty(2 * MiB, device="cuda")
        with tms.region(tag="kv"):
            kv = torch.empty(4 * MiB, device="cuda")
            with tms.disable():
                plain = torch.empty(MiB, device="cuda")
        b = torch.empty(6 * MiB, dtype=torch.bfloat16, device="cuda")  # back in the outer region
    u = tms.usage()
    assert (tms.usage("weights")["allocations"], tms.usage("kv")["allocations"]) == (2, 1), u
    assert u["allocations"] == 3, "disable() and outside-region tensors are not tms memory"
    a.fill_bytes(pattern(2 * MiB, 1))
    b.fill_bytes(pattern(12 * MiB, 2))
    outside.fill_bytes(pattern(2 * MiB, 3))
    addrs = (a.data_ptr(), b.data_ptr())
    held = mock.mock_cuda_device_bytes()

    tms.pause("weights")
    assert tms.usage("weights")["device_bytes"] == 0 and tms.usage("kv")["device_bytes"] > 0
    assert mock.mock_cuda_device_bytes() == held - 14 * MiB, "the weights' GPU memory is given back"
    cpu = tms.get_cpu_backup(b)
    assert cpu.dtype is torch.bfloat16 and cpu.shape == b.shape and cpu.tobytes() == pattern(12 * MiB, 2)
    zc = tms.get_cpu_backup(a, zero_copy=True)
    assert zc.tobytes() == pattern(2 * MiB, 1)
    assert outside.tobytes() == pattern(2 * MiB, 3), "memory outside a region is untouched"
    try:
        tms.pause("weights")
        raise AssertionError("a second pause must raise")
    except pinpool.PinpoolError as e:
        assert "already paused" in str(e), e
    tms.resume("weights")
    assert (a.data_ptr(), b.data_ptr()) == addrs
    assert a.tobytes() == pattern(2 * MiB, 1) and b.tobytes() == pattern(12 * MiB, 2)
    assert tms.get_cpu_backup(a) is None, "resident and not retained: no backup"

    # every tag; a tag without backup loses its contents, and get_cpu_backup says so
    tms.pause()
    assert mock.mock_cuda_device_bytes() == held - 18 * MiB
    try:
        tms.get_cpu_backup(kv)
        raise AssertionError("get_cpu_backup of a paused tag without backup must raise")
    except pinpool.PinpoolError as e:
        assert "enable_cpu_backup=False" in str(e), e
    tms.resume()
    assert b.tobytes() == pattern(12 * MiB, 2)

    # retain: the backup stays and is readable; margin
    tms.retain_cpu_backup = True
    assert tms.retain_cpu_backup is True
    tms.pause("weights"); tms.resume("weights")
    assert tms.get_cpu_backup(b).tobytes() == pattern(12 * MiB, 2)
    tms.retain_cpu_backup = False
    tms.pause("weights"); tms.resume("weights")
    tms.memory_margin_bytes = 80 << 30
    try:
        with tms.region(tag="weights", enable_cpu_backup=True):
            torch.empty(2 * MiB, device="cuda")
        raise AssertionError("the margin must refuse the allocation")
    except torch.cuda.OutOfMemoryError:
        pass
    tms.memory_margin_bytes = 0

    # disk backup: released to the daemon
    with tms.region(tag="opt", enable_disk_backup=True):
        o = torch.empty(2 * MiB, device="cuda")
    o.fill_bytes(pattern(2 * MiB, 4))
    tms.pause("opt")
    with pinpool.Client(sock) as c:
        assert c.exists("swap:opt~disk")
    assert tms.get_cpu_backup(o) is None
    tms.resume("opt")
    assert o.tobytes() == pattern(2 * MiB, 4)

    # cuda_graph: the graph's memory is the region's pool; a shared handle maps to one pool
    g1, g2 = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
    handle = torch.cuda.graph_pool_handle()
    with tms.cuda_graph(g1, pool=handle, tag="graph"):
        s1 = torch.empty(2 * MiB, device="cuda")
    with tms.cuda_graph(g2, pool=g1.pool(), tag="graph"):
        s2 = torch.empty(2 * MiB, device="cuda")
    assert g1.pool() == g2.pool(), "graphs sharing a pool share one pinpool pool"
    assert tms.usage("graph")["allocations"] == 2
    s1.fill_bytes(pattern(2 * MiB, 5))
    tms.pause("graph"); tms.resume("graph")   # no backup: the graph's scratch memory
    g1.replay()

    # torch frees: the VMM allocation goes and is not copied by later pauses
    before = mock.mock_cuda_device_bytes()
    del kv
    assert mock.mock_cuda_device_bytes() == before - 4 * MiB
    assert tms.usage("kv")["allocations"] == 0 and tms.usage("kv")["swap_tags"] == 0
    del a, b, zc, cpu, o, s1, s2
    assert tms.usage()["allocations"] == 0
    with pinpool.Client(sock) as c:
        assert c.swap_usage() == {}, c.swap_usage()
    print("ok")
""")


@pytest.fixture
def mock_daemon():
    if has_torch():
        pytest.skip("torch is installed: the stand-in torch would not be the one imported")
    d, env = mock_cuda_daemon()
    d.env = dict(env, PYTHONPATH=os.pathsep.join([str(STUB), str(REPO / "client" / "python")] + sys.path))
    yield d
    try:
        _child(d, "empty")  # the pool back to 0 bytes, no copy kept
    finally:
        assert d.stop() == 0


def _child(d, mode):
    r = subprocess.run([sys.executable, "-c", CHILD, d.socket, mode], env=d.env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr
    return r


def test_regions_tags_graphs_backups_with_stand_ins(mock_daemon):
    _child(mock_daemon, "all")


def test_a_new_process_resumes_a_paused_tag(mock_daemon):
    _child(mock_daemon, "pause-exit")
    _child(mock_daemon, "kept")  # the paused copy outlives the process, shown per tag
    _child(mock_daemon, "resume-new")
