"""`import pinpool` needs no GPU, torch, library or daemon (installing it: test_venv.py)."""
import os
import subprocess
import sys
from pathlib import Path

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
