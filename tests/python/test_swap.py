"""The swap API from Python: errors where there is no CUDA, and a round trip
against the stand-in driver (tests/mock/libcuda.c) in a child process, where
device memory is host memory (so the bytes can be checked with ctypes)."""
import os
import subprocess
import sys
import textwrap

import pytest

import pinpool
from pinpool import _lib

from conftest import REPO, mock_cuda_daemon


def test_swap_without_cuda_says_why(daemon):
    with pinpool.Client(daemon.socket) as c:
        with pytest.raises(TypeError):
            c.swap_pause(None)
        with pytest.raises(pinpool.InvalidArgumentError, match="printable"):
            c.swap_pause("has space")
        with pytest.raises(pinpool.InvalidArgumentError, match="streams"):
            c.swap_config(0)
        for call in (lambda: c.swap_alloc("m", 1 << 20), lambda: c.swap_pause("m"),
                     lambda: c.swap_resume("m"), lambda: c.swap_wait("m"), lambda: c.swap_info("m")):
            with pytest.raises(pinpool.PinpoolError, match="CUDA") as e:
                call()
            assert e.value.code == _lib.ECUDA


CHILD = textwrap.dedent("""
    import ctypes, sys
    import pinpool
    c = pinpool.Client(sys.argv[1])
    a = c.swap_alloc("py", 3 << 20)
    ctypes.memset(a, 0x5a, 3 << 20)           # the stand-in's device memory is host memory
    c.swap_pause("py", release=True)
    c.swap_wait("py")
    i = c.swap_info("py")
    assert i["state"] == "paused" and i["released"] and i["device_bytes"] == 0, i
    c.swap_resume("py")
    c.swap_wait("py")
    assert c.swap_info("py")["state"] == "resident"
    assert ctypes.string_at(a, 16) == b"\\x5a" * 16 and ctypes.string_at(a + (3 << 20) - 1, 1) == b"\\x5a"
    c.swap_pause("py", spillable=True)         # the copy goes to the daemon as a released object
    c.swap_wait("py")
    assert c.swap_info("py")["host_slice_id"] == 0 and c.exists("swap:py")
    c.swap_resume("py")
    c.swap_wait("py")
    assert ctypes.string_at(a, 16) == b"\\x5a" * 16
    c.swap_drop("py", free_host=True)
    assert c.info()["used_bytes"] == 0
    c.close()
    print("ok")
""")


def test_swap_round_trip_with_stand_in_driver():
    d, env = mock_cuda_daemon()
    try:
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "client" / "python")] + sys.path)
        r = subprocess.run([sys.executable, "-c", CHILD, d.socket], env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
    finally:
        assert d.stop() == 0
