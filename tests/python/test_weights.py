"""pinpool.weights against the real daemon: tensor manifests published by one process and
attached by another (numpy in the host pool; torch where it is installed, which CI is not),
the builder, versions and drop, the atomic commit (a reader during a publish sees the old
version, a killed publisher leaves it and is collected), load_into's checks naming the
tensor, a spillable manifest spilled and restored byte-exact, and device manifests on the
stand-in driver (tests/mock/libcuda.c: device memory is host memory, so bytes can be read
with ctypes).  The C side of the same paths: tests/test_manifest.c."""
import ctypes
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pinpool
from pinpool import weights

from conftest import REPO, mock_cuda_daemon

MiB = 1 << 20


def child_env(extra=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "client" / "python"),
                                                       str(REPO / "tests" / "python")]))
    env.update(extra or {})
    return env


def run_child(code, *args, env=None, timeout=120):
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                       env=env or child_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr
    return r.stdout


def sample(seed):
    """A state dict of numpy arrays: several dtypes, a scalar, an empty tensor, a
    non-contiguous view, and a tied pair (the same array under two names)."""
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((64, 48), dtype=np.float32)
    return {
        "embed.weight": emb,
        "lm_head.weight": emb,  # tied
        "layers.0.w": rng.standard_normal((48, 96)).astype(np.float16),
        "layers.0.wT": rng.standard_normal((96, 48)).astype(np.float32).T,  # strided source
        "layers.0.mask": rng.integers(0, 2, (7, 5)).astype(bool),
        "layers.0.ids": rng.integers(-5, 5, (33,), dtype=np.int64),
        "step": np.array(seed, dtype=np.int32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }


def test_publish_in_one_process_attach_in_another(daemon):
    sd = sample(7)
    v = weights.publish("np/tiny", sd, device=None, socket=daemon.socket,
                        metadata={"arch": "tiny", "layers": 1})
    assert v == 1
    inf = weights.info("np/tiny", socket=daemon.socket)
    assert inf["num_tensors"] == len(sd) and inf["placement"] == "kept" and inf["device"] is None
    assert inf["metadata"] == {"arch": "tiny", "layers": 1}
    t = {x["name"]: x for x in inf["tensors"]}
    assert t["embed.weight"]["offset"] == t["lm_head.weight"]["offset"], "tied: one copy"
    assert t["layers.0.wT"]["strides"] == (96, 1), "stored contiguously"
    assert t["step"]["shape"] == () and t["empty"]["nbytes"] == 0
    out = run_child("""
        import sys, numpy as np
        from pinpool import weights
        from test_weights import sample
        sd = sample(7)
        w = weights.attach("np/tiny", device=None, socket=sys.argv[1])
        assert w.version == 1 and len(w) == len(sd) and w.metadata["arch"] == "tiny", w.info
        for k, a in sd.items():
            b = w[k]
            assert b.dtype == a.dtype and b.shape == a.shape, (k, b.dtype, b.shape)
            assert np.array_equal(a, b), k
            assert not b.flags.writeable, k
        try:
            w["embed.weight"][0, 0] = 1
            raise SystemExit("writable")
        except ValueError:
            pass
        assert np.shares_memory(w["embed.weight"], w["lm_head.weight"])
        w.verify()
        w.close()
        print("ok")
    """, daemon.socket)
    assert out.strip() == "ok"
    weights.drop("np/tiny", socket=daemon.socket)


def test_builder_versions_an_old_reader_and_drop(daemon):
    s = daemon.socket
    layout = {"a": ((1000, 256), np.float32), "b": ((77,), "I64")}
    with weights.builder("built", layout, device=None, socket=s) as b:
        b["a"][...] = 1.5
        b.write("b", np.arange(77, dtype=np.int64))
        assert b.version == 1
    assert b.version == 1
    old = weights.attach("built", device=None, socket=s)
    with weights.builder("built", layout, device=None, socket=s) as b:
        b["a"][...] = -2
        b["b"][...] = 9
    assert b.version == 2
    assert weights.versions("built", socket=s) == {"current": 2, "versions": [1, 2]}
    assert (old["a"] == 1.5).all() and (old["b"] == np.arange(77)).all(), "v1 stays mapped"
    cur = weights.attach("built", device=None, socket=s)
    assert cur.version == 2 and (cur["a"] == -2).all()
    with pytest.raises(pinpool.PinpoolError, match="attached by client") as e:
        weights.drop("built", 1, socket=s)
    assert e.value.code == pinpool._lib.EBUSY
    assert weights.drop_old("built", keep=1, socket=s) == ([], [1])
    old.close()
    assert weights.drop_old("built", keep=1, socket=s) == ([1], [])
    with pytest.raises(pinpool.InvalidArgumentError, match="current one"):
        weights.drop("built", 2, socket=s)
    cur.close()
    weights.drop("built", socket=s)
    with pytest.raises(pinpool.NotFoundError, match="no manifest named 'built'"):
        weights.versions("built", socket=s)


def test_an_exception_in_the_builder_aborts(daemon):
    s = daemon.socket
    with pytest.raises(RuntimeError, match="boom"):
        with weights.builder("aborted", {"x": ((1 << 20,), "U8")}, device=None, socket=s) as b:
            b["x"][...] = 3
            raise RuntimeError("boom")
    with pytest.raises(pinpool.NotFoundError):
        weights.attach("aborted", device=None, socket=s)
    assert daemon.info()["num_kept"] == 0, "the aborted version's slice is freed"
    weights.drop("aborted", socket=s)  # the record of a name without a version


PUBLISHER = """
    import sys, numpy as np
    from pinpool import weights
    b = weights.builder("atomic", {"x": ((4 * 1024 * 1024,), "U8")}, device=None, socket=sys.argv[1])
    b["x"][...] = 0x5a
    print("ready", b.version, flush=True)
    sys.stdin.readline()   # the parent kills us before the commit
    b.commit()
    print("ok")
"""


def test_the_commit_is_atomic_and_a_killed_publisher_is_collected(daemon):
    s = daemon.socket
    weights.publish("atomic", {"x": np.full(1000, 7, np.uint8)}, device=None, socket=s)
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(PUBLISHER), s], env=child_env(),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("ready 2"), line
        w = weights.attach("atomic", device=None, socket=s)
        assert w.version == 1 and (w["x"] == 7).all(), "a reader during a publish sees v1"
        w.close()
        with pytest.raises(pinpool.PinpoolError, match="is publishing 'atomic'"):
            weights.builder("atomic", {"y": ((1,), "U8")}, device=None, socket=s)
        assert weights.collect("atomic", socket=s) == 0, "a live publisher is left alone"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    w = weights.attach("atomic", device=None, socket=s)
    assert w.version == 1, "a publisher killed before its commit leaves the old version"
    w.close()
    for _ in range(200):  # until the daemon has seen the session end
        n = weights.collect("atomic", socket=s)
        if n:
            break
        import time
        time.sleep(0.01)
    assert n == 1
    assert daemon.info()["num_kept"] == 1, "only version 1's slice is left"
    assert weights.publish("atomic", {"x": np.zeros(3, np.uint8)}, device=None, socket=s) == 3
    weights.drop("atomic", socket=s)


def test_load_into_names_the_tensor_that_does_not_fit(daemon):
    s = daemon.socket
    sd = sample(3)
    weights.publish("fit", sd, device=None, socket=s)
    target = {k: np.zeros_like(v) for k, v in sd.items()}
    bad = dict(target)
    del bad["layers.0.ids"]
    bad["nothere"] = np.zeros(3, np.float32)
    with pytest.raises(weights.MismatchError, match="'nothere' is not in the manifest") as e:
        weights.load_into(bad, "fit", device=None, socket=s)
    assert e.value.tensor == "nothere"
    bad = dict(target)
    del bad["layers.0.ids"]
    with pytest.raises(weights.MismatchError, match="'layers.0.ids' is in the manifest but not in "
                                                    "the module") as e:
        weights.load_into(bad, "fit", device=None, socket=s)
    assert e.value.tensor == "layers.0.ids"
    w0 = weights.load_into(bad, "fit", device=None, socket=s, strict=False)
    assert bad["embed.weight"] is w0["embed.weight"] and "layers.0.ids" in w0
    w0.close()
    bad = dict(target, **{"layers.0.w": np.zeros((48, 96), np.float32)})
    with pytest.raises(weights.MismatchError, match="'layers.0.w' is F16 in the manifest, F32 in"):
        weights.load_into(bad, "fit", device=None, socket=s)
    bad = dict(target, step=np.zeros((1,), np.int32))
    with pytest.raises(weights.MismatchError, match=r"'step' has shape \(\) in the manifest, \(1,\)"):
        weights.load_into(bad, "fit", device=None, socket=s)
    assert all((target[k] == 0).all() for k in target), "a failed load_into changes nothing"
    w = weights.load_into(target, "fit", device=None, socket=s)
    for k, v in sd.items():
        assert np.array_equal(target[k], v) and target[k] is w[k], k
    del target, w, bad
    import gc

    gc.collect()  # the arrays held the mappings
    weights.drop("fit", socket=s)


def test_load_into_a_torch_module(daemon):
    torch = pytest.importorskip("torch")
    s = daemon.socket

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(50, 16)
            self.lin = torch.nn.Linear(16, 50, bias=True)
            self.lin.weight = self.emb.weight  # tied
            self.register_buffer("scale", torch.tensor([2.0]))
            self.register_buffer("tmp", torch.zeros(3), persistent=False)

    torch.manual_seed(0)
    src = M().to(torch.bfloat16)
    weights.publish("torch/m", src, device=None, socket=s)
    dst = M().to(torch.bfloat16)
    w = weights.load_into(dst, "torch/m", device=None, socket=s, framework="torch")
    assert dst.lin.weight is dst.emb.weight, "tied parameters stay tied"
    assert dst.emb.weight.data_ptr() == w["emb.weight"].data_ptr(), "no copy"
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    x = torch.tensor([[1, 2, 3]])
    assert torch.equal(dst.lin(dst.emb(x)), src.lin(src.emb(x)))
    wrong = M()  # float32
    with pytest.raises(weights.MismatchError, match="BF16 in the manifest, F32 in the module"):
        weights.load_into(wrong, "torch/m", device=None, socket=s, framework="torch")
    del dst, w
    import gc

    gc.collect()
    weights.drop("torch/m", socket=s)


def test_a_spillable_manifest_survives_a_spill_and_restore(daemon):
    s = daemon.socket
    rng = np.random.default_rng(11)
    sd = {f"t{i}": rng.integers(0, 255, (5 * MiB + 1000 * i,), dtype=np.uint8) for i in range(6)}
    weights.publish("cold", sd, device=None, socket=s, spillable=True, segment_bytes=12 * MiB)
    inf = weights.info("cold", socket=s)
    assert inf["placement"] == "released" and inf["num_segments"] >= 3
    with pinpool.Client(s) as c:
        fill = [c.alloc(14 * MiB) for _ in range(16)]  # 224 MiB of a 256 MiB pool
        sp = c.info()["spill"]
        assert sp["spills"] >= 1 and sp["objects_spilled"] >= 1, sp
        for f in fill:
            c.free(f)
        w = weights.attach("cold", device=None, socket=s)
        assert c.info()["spill"]["restores"] >= 1
        for k, v in sd.items():
            assert np.array_equal(w[k], v), k
        w.verify()
        w.close()  # the segments are released again
        w = weights.attach("cold", device=None, socket=s)
        assert all(np.array_equal(w[k], v) for k, v in sd.items())
        w.close()
    weights.drop("cold", socket=s)


def test_argument_errors(daemon):
    s = daemon.socket
    with pytest.raises(pinpool.InvalidArgumentError, match="@!~#"):
        weights.publish("bad@name", {"x": np.zeros(1)}, device=None, socket=s)
    with pytest.raises(pinpool.NotFoundError, match="no manifest named 'nothing'"):
        weights.attach("nothing", device=None, socket=s)
    with pytest.raises(TypeError, match="no manifest dtype"):
        weights.publish("c", {"x": np.zeros(2, np.complex64)}, device=None, socket=s)
    with pytest.raises(ValueError, match="host memory"):
        weights.attach("nothing", device=0, framework="numpy", socket=s)
    with pytest.raises(TypeError):
        weights.publish("c", [1, 2, 3], device=None, socket=s)
    assert weights.dtype_name("bfloat16") == "BF16" and weights.dtype_name(np.float16) == "F16"
    assert weights.dtype_name("torch.float8_e4m3fn") == "F8_E4M3"
    weights.publish("cpu", {"x": np.zeros(4, np.float32)}, device=None, socket=s)
    with pytest.raises(pinpool.PinpoolError, match="copying manifest 'cpu' to GPU 0") as e:
        weights.attach("cpu", device=0, socket=s)  # a copy to a GPU needs CUDA here
    assert e.value.code == pinpool._lib.ECUDA
    weights.drop("cpu", socket=s)
    for name in ("c", "bad@name"):
        try:
            weights.drop(name, socket=s)
        except (pinpool.NotFoundError, pinpool.InvalidArgumentError):
            pass


DEVICE_PUBLISH = """
    import sys, numpy as np
    from pinpool import weights
    from test_weights import sample
    v = weights.publish("gpu/tiny", sample(5), device=0, socket=sys.argv[1], segment_bytes=8192)
    assert v == 1
    weights.publish("host/tiny", sample(6), device=None, socket=sys.argv[1])
    print("ok")
"""

DEVICE_ATTACH = """
    import ctypes, sys, numpy as np
    from pinpool import weights
    from test_weights import sample
    s = sys.argv[1]
    w = weights.attach("gpu/tiny", device=0, socket=s)
    assert w.info["device"] == 0 and w.info["num_segments"] > 1, w.info
    sd = sample(5)
    for k, a in sd.items():
        t = w[k]
        assert isinstance(t, weights.CudaTensor) and t.device == 0, t
        a = np.array(a, order="C")
        assert t.shape == a.shape and t.nbytes == a.nbytes, (k, t, a.shape)
        if a.nbytes:  # the stand-in's device memory is host memory: read it
            assert ctypes.string_at(t.ptr, a.nbytes) == a.tobytes(), k
        cai = t.__cuda_array_interface__
        assert cai["data"] == (t.ptr, True) and cai["shape"] == a.shape, cai
    assert w["embed.weight"].ptr == w["lm_head.weight"].ptr
    w.verify()
    # a write through the reader's tensor: its mapping is read-only (the vmm device pool),
    # so the writing process dies of SIGSEGV and the bytes stay as published
    import os, signal
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGSEGV, signal.SIG_DFL)  # not a sanitizer's or faulthandler's
        ctypes.memset(w["layers.0.w"].ptr + 10, 0x7f, 1)
        os._exit(0)
    _, st = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGSEGV, st
    w.verify()
    w.close()
    h = weights.attach("host/tiny", device=0, socket=s)   # copied to the device
    assert h.device == 0 and h.info["device"] is None
    for k, a in sample(6).items():
        a = np.array(a, order="C")
        if a.nbytes:
            assert ctypes.string_at(h[k].ptr, a.nbytes) == a.tobytes(), k
    h.verify()
    h.close()
    weights.drop("gpu/tiny", socket=s)
    weights.drop("host/tiny", socket=s)
    print("ok")
"""


GPUS_INFO = """
import sys, pinpool
with pinpool.Client(sys.argv[1]) as c:
    gpus = c.info()["gpus"]
assert [(g["device_id"], g["role"], g["device_pool_bytes"]) for g in gpus] == \\
    [(0, "device pool, host pinning", 64 << 20)], gpus
assert 0 < gpus[0]["gpu_used_bytes"] <= gpus[0]["gpu_total_bytes"], gpus
print("ok")
"""


def test_device_manifests_on_the_stand_in_driver():
    d, env = mock_cuda_daemon("--device-pool-size", "64MiB")
    try:
        env = child_env({"LD_LIBRARY_PATH": env["LD_LIBRARY_PATH"]})
        run_child(DEVICE_PUBLISH, d.socket, env=env)
        run_child(DEVICE_ATTACH, d.socket, env=env)
        run_child(GPUS_INFO, d.socket, env=env)  # the daemon's context on GPU 0, and why
    finally:
        assert d.stop() == 0
