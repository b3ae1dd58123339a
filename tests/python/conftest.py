"""Fixtures of the Python suite: the real daemon on a fresh temp socket.

`daemon` starts `build/pinpool serve --socket TMP --mem-pool-size 256MiB
--chunk-size 16MiB` ($PINPOOL_BIN overrides the binary), waits for its
`pinpool ready` line, and at the end checks that the pool is back to zero bytes
in use and that SIGTERM makes it exit 0.  The pinpool package comes from
client/python (PYTHONPATH, `pip install`, or the path added below); its library
from $PINPOOL_LIB or the repository's build/.
"""
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
try:
    import pinpool  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO / "client" / "python"))
    import pinpool  # noqa: F401

BIN = os.environ.get("PINPOOL_BIN", str(REPO / "build" / "pinpool"))
READY_TIMEOUT_S = 20


class Daemon:
    def __init__(self, *args):
        self.dir = tempfile.mkdtemp(prefix="pinpool-py-", dir="/tmp")  # short: sun_path
        self.socket = os.path.join(self.dir, "pinpool.sock")
        self.log = os.path.join(self.dir, "daemon.log")
        env = dict(os.environ, GRPC_VERBOSITY="ERROR")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [BIN, "serve", "--socket", self.socket, "--mem-pool-size", "256MiB",
                 "--chunk-size", "16MiB", "--state-dir", os.path.join(self.dir, "state"),
                 *args],
                stdout=subprocess.PIPE, stderr=log, env=env)
        self.ready = self._read_ready()

    def _read_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT_S
        buf = b""
        while b"\n" not in buf and time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
        line = buf.decode(errors="replace").splitlines()[0] if buf else ""
        if not line.startswith("pinpool ready"):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"the daemon did not get ready ({line!r}); its log:\n"
                               + Path(self.log).read_text(errors="replace"))
        return line

    def info(self):
        with pinpool.Client(self.socket) as c:
            return c.info()

    def used(self, settle_s=0.0):
        """Bytes in use; with settle_s, wait up to that long for them to reach 0
        (a closed session's slices are freed when the daemon sees it go)."""
        deadline = time.monotonic() + settle_s
        used = self.info()["used_bytes"]
        while used != 0 and time.monotonic() < deadline:
            time.sleep(0.01)
            used = self.info()["used_bytes"]
        return used

    def stop(self):
        """SIGTERM; returns the exit status (None if it had to be killed)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self.proc.stdout.close()
        if rc == 0:
            shutil.rmtree(self.dir, ignore_errors=True)
        return rc


def mock_cuda_dir():
    """The folder of the stand-in libcuda.so.1 (tests/mock/libcuda.c); skips the
    test where it is not built (no cuda.h)."""
    build = Path(os.environ.get("PINPOOL_BUILD", REPO / "build"))
    mock = (build if build.is_absolute() else REPO / build) / "mockcuda"
    if not (mock / "libcuda.so.1").exists():
        pytest.skip(f"no stand-in driver in {mock} (built where cuda.h is)")
    return mock


def mock_cuda_daemon(*args):
    """A daemon with the vmm host backend on the stand-in driver, and the
    environment for child processes that use it (this process has no CUDA, so it
    cannot map that daemon's memory: the checks run in children)."""
    mock = mock_cuda_dir()
    old = os.environ.get("LD_LIBRARY_PATH")
    os.environ["LD_LIBRARY_PATH"] = str(mock)  # the daemon's too
    try:
        d = Daemon("--host-backend", "vmm", *args)
    finally:
        if old is None:
            del os.environ["LD_LIBRARY_PATH"]
        else:
            os.environ["LD_LIBRARY_PATH"] = old
    assert "mode=cuda" in d.ready, d.ready
    return d, dict(os.environ, LD_LIBRARY_PATH=str(mock))


@pytest.fixture
def daemon():
    d = Daemon()
    yield d
    used = d.used(settle_s=2.0)
    rc = d.stop()
    assert used == 0, f"the pool still has {used} bytes in use at the end"
    assert rc == 0, f"the daemon exited with {rc} on SIGTERM; log in {d.log}"
