"""`pip install ./client/python` into a fresh venv works with nothing else set.

A new `python -m venv` in a temp dir; `pip install --no-index ./client/python`
(the in-tree build backend runs `make python-lib`: no network, no setuptools);
then, in that venv with a clean environment (no PINPOOL_LIB, no PYTHONPATH, cwd
outside the repository), import pinpool, Client().alloc/free and a
ServerPinnedMemoryPool round trip against the daemon of the `daemon` fixture,
checking that the package, libpinpool.so and its private libraries all come
from the venv.

The venv sees the system's site-packages (--system-site-packages) only so that
numpy, which `make test` installs for $(PYTHON), is there for the pool's arrays;
the script checks that pinpool itself is the venv's.
Under SANITIZE (make test sets PINPOOL_TEST_SANITIZE and PINPOOL_BUILD) the
wheel carries the sanitized build's library, which, like the rest of this suite,
needs its runtime preloaded into python: LD_PRELOAD and ASAN_OPTIONS are passed
on to the venv's python, and nothing else.  The install itself runs without them.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "client" / "python"

SCRIPT = r'''
import os, sys
import numpy as np
import pinpool
from pinpool import _lib

socket, venv = sys.argv[1], sys.argv[2]
here = os.path.dirname(pinpool.__file__)
assert here.startswith(venv + os.sep), f"pinpool from {here}, not from the venv {venv}"
assert "PINPOOL_LIB" not in os.environ and "PYTHONPATH" not in os.environ

with pinpool.Client(socket) as c:
    s = c.alloc(1 << 20)
    a = s.as_array()
    a[:] = 7
    assert int(a.sum()) == 7 << 20
    assert c.free(s) == 1 << 20
    with pinpool.ServerPinnedMemoryPool(dtype=np.float32, pool_size=0.01, client=c) as p:
        b = p.alloc(4096)
        b[:] = 1.5
        assert float(b.sum()) == 1.5 * 1024
        p.free(b)
        assert p.get_usage_info()["allocated_mb"] == 0
    assert c.info()["used_bytes"] == 0

bundled = os.path.join(here, "libpinpool.so")
assert _lib.candidates()[0] == bundled, _lib.candidates()
os.environ["PINPOOL_LIB"] = "/elsewhere/libpinpool.so"
assert _lib.candidates()[:2] == ["/elsewhere/libpinpool.so", bundled], _lib.candidates()
del os.environ["PINPOOL_LIB"]
loaded = _lib.lib()._name
assert loaded == bundled, loaded
maps = {line.split()[-1] for line in open("/proc/self/maps") if ".so" in line}
for name in ("libpinpool.so", "libgrpc.so", "libgpr.so", "libprotobuf-c.so", "libabsl_base.so"):
    paths = sorted(m for m in maps if os.path.basename(m).startswith(name))
    assert paths and all(os.path.dirname(m) == here for m in paths), (name, paths)
print("ok", loaded)
'''


def _clean_env(home):
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home), "LANG": "C.UTF-8"}
    if os.environ.get("PINPOOL_TEST_SANITIZE"):
        for k in ("LD_PRELOAD", "ASAN_OPTIONS"):
            if k in os.environ:
                env[k] = os.environ[k]
    return env


def _make_env(home):
    """The install: make builds the same BUILD (and SANITIZE) as the run that tests."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1"}
    for var, make_var in (("PINPOOL_BUILD", "BUILD"), ("PINPOOL_TEST_SANITIZE", "SANITIZE")):
        if os.environ.get(var):
            env[make_var] = os.environ[var]
    return env


def _venv(tmp_path):
    venv = tmp_path / "venv"
    r = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, ("python -m venv failed (Debian's python3 needs python3-venv:"
                               " make test-python installs it)\n" + r.stdout + r.stderr)
    return venv


def test_pip_install_into_a_fresh_venv(daemon, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    venv = _venv(tmp_path)
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-index",
                        str(PKG)], capture_output=True, text=True, timeout=280,
                       env=_make_env(home), cwd=str(home))
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([str(venv / "bin" / "python"), "-c", SCRIPT, daemon.socket, str(venv)],
                       capture_output=True, text=True, timeout=120, env=_clean_env(home),
                       cwd=str(home))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ok "), r.stdout


def test_a_copy_outside_the_repository_says_why_it_cannot_build(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    src = tmp_path / "src"
    shutil.copytree(PKG, src, ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-index", "--no-deps",
                        "-w", str(tmp_path / "wheels"), str(src)], capture_output=True,
                       text=True, timeout=120, env=_make_env(home), cwd=str(home))
    assert r.returncode != 0
    assert "is built from its repository" in r.stdout + r.stderr, r.stdout + r.stderr
