"""`import pinpool` needs no GPU, torch, library or daemon; the package installs."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "client" / "python"


def run_py(code, **env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True,
                          timeout=60)


def test_import_without_torch_library_or_daemon():
    code = ("import sys; sys.modules['torch'] = None\n"  # `import torch` raises ImportError
            "import pinpool\n"
            "assert pinpool.__version__ == '0.1.0'\n"
            "assert pinpool._lib._lib is None, 'the library is loaded on first use only'\n"
            "print('ok')\n")
    r = run_py(code, PYTHONPATH=str(PKG), PINPOOL_LIB="/nonexistent/libpinpool.so",
               PINPOOL_SOCKET="/nonexistent/pinpool.sock")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_default_dtype_without_torch_is_numpy_float16(daemon):
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy, pinpool\n"
            f"with pinpool.ServerPinnedMemoryPool(pool_size=0.0625, socket={daemon.socket!r}) as p:\n"
            "    b = p.alloc(10)\n"
            "    assert isinstance(b, numpy.ndarray) and b.dtype == numpy.float16, b.dtype\n"
            "    assert b.shape == (5,)\n"
            "    p.free(b)\n"
            "print('ok')\n")
    r = run_py(code, PYTHONPATH=str(PKG))
    assert r.returncode == 0, r.stderr


def test_pip_installs_the_package(tmp_path):
    pytest.importorskip("setuptools")  # the build backend; offline: no build isolation
    target = tmp_path / "site"
    src = tmp_path / "src"  # a copy: setuptools writes build/ and egg-info next to it
    shutil.copytree(PKG, src, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                            "__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--no-build-isolation", "--target", str(target), str(src)],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PIP_ROOT_USER_ACTION="ignore",
                                PIP_BREAK_SYSTEM_PACKAGES="1",
                                PIP_DISABLE_PIP_VERSION_CHECK="1"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (target / "pinpool" / "__init__.py").exists()
    r = run_py("import pinpool, os; print(os.path.dirname(pinpool.__file__))",
               PYTHONPATH=str(target))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(target / "pinpool")
    # installed away from the repository: no build/ nearby, so the library is
    # found through PINPOOL_LIB, and its absence is explained
    env = {k: v for k, v in os.environ.items() if k != "PINPOOL_LIB"}
    code = ("import pinpool\n"
            "try:\n"
            "    pinpool.library_version()\n"
            "    print('found')\n"
            "except OSError as e:\n"
            "    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(env, PYTHONPATH=str(target)), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "found" or "PINPOOL_LIB" in r.stdout, r.stdout
    r = run_py("import pinpool; print(pinpool.library_version())", PYTHONPATH=str(target),
               PINPOOL_LIB=os.environ.get("PINPOOL_LIB", str(REPO / "build" / "libpinpool.so")))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0.1.0"
