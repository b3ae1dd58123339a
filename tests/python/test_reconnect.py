"""The Python package after the daemon went (exited, was killed, restarted): one
error (SessionError) until Client.reconnect(), ServerPinnedMemoryPool reconnects for
its next block and says its old blocks are gone; and a Put larger than the daemon's
--max-message-size (through a slice), every byte checked."""
import os
import signal
import subprocess

import numpy as np
import pytest

import pinpool
from conftest import BIN, Daemon

MiB = 1 << 20


def restart(d, sig=signal.SIGKILL, *args):
    """End d's daemon with sig and start a new one on the same socket."""
    d.proc.send_signal(sig)
    d.proc.wait(timeout=10)
    d.proc.stdout.close()
    env = dict(os.environ, GRPC_VERBOSITY="ERROR")
    with open(d.log, "ab") as log:
        d.proc = subprocess.Popen(
            [BIN, "serve", "--socket", d.socket, "--mem-pool-size", "256MiB",
             "--chunk-size", "16MiB", "--state-dir", os.path.join(d.dir, "state"), *args],
            stdout=subprocess.PIPE, stderr=log, env=env)
    d.ready = d._read_ready()


def test_a_client_says_its_session_ended_until_it_reconnects(daemon):
    with pinpool.Client(daemon.socket) as c:
        old_id = c.client_id
        c.alloc(MiB)
        assert not c.session_ended
        restart(daemon)
        assert c.session_ended
        with pytest.raises(pinpool.SessionError, match="pinpool_reconnect"):
            c.alloc(MiB)
        with pytest.raises(pinpool.SessionError):
            c.put("k", b"v")
        c.reconnect()
        assert not c.session_ended and c.client_id != old_id
        s = c.alloc(4 * MiB)
        want = np.random.default_rng(5).integers(0, 256, s.size, dtype=np.uint8)
        np.frombuffer(s.buffer(), dtype=np.uint8)[:] = want
        c.release(s, "after-restart")
        s = c.acquire("after-restart")  # (a Get of MiBs makes the daemon's exit slow)
        assert bytes(s.buffer()) == want.tobytes()
        c.free(s)
        assert c.info()["num_clients"] == 1


def test_a_reconnect_while_no_daemon_runs_is_a_connect_error(daemon):
    with pinpool.Client(daemon.socket) as c:
        daemon.proc.kill()
        daemon.proc.wait(timeout=10)
        with pytest.raises(pinpool.ConnectError):
            c.reconnect()
        assert c.session_ended
        restart(daemon, signal.SIGKILL)  # the old one is gone already: kill is a no-op
        c.reconnect()
        c.free(c.alloc(MiB))


def test_the_pool_reconnects_for_its_next_block_and_says_old_blocks_are_gone(daemon):
    with pinpool.ServerPinnedMemoryPool(dtype=np.uint8, pool_size=0.0625, socket=daemon.socket,
                                        lease_mb=8) as pool:
        old = pool.alloc(4096)
        old[:] = 7
        restart(daemon)
        new = pool.alloc(1 << 20)  # reconnects, leases anew
        new[:] = np.arange(new.size, dtype=np.uint64).astype(np.uint8)
        assert np.array_equal(new, np.arange(new.size, dtype=np.uint64).astype(np.uint8))
        with pytest.raises(pinpool.SessionError, match="ended"):
            pool.free(old)
        info = pool.get_usage_info()
        assert info["allocated_mb"] == 1
        pool.free(new)
        assert pool.get_usage_info()["allocated_mb"] == 0


def test_usage_info_after_a_restart_reconnects_too(daemon):
    with pinpool.ServerPinnedMemoryPool(dtype=np.uint8, pool_size=0.0625, socket=daemon.socket,
                                        lease_mb=8) as pool:
        pool.alloc(4096)
        restart(daemon, signal.SIGTERM)
        info = pool.get_usage_info()
        assert info["allocated_mb"] == 0 and info["num_leases"] == 0
        pool.free(pool.alloc(4096))


def test_a_put_larger_than_a_message_goes_through_a_slice():
    d = Daemon("--max-message-size", "1MiB")
    try:
        with pinpool.Client(d.socket) as c:
            data = np.random.default_rng(9).integers(0, 256, 5 * MiB + 3,
                                                     dtype=np.uint8).tobytes()
            c.put("big", data)
            s = c.acquire("big")
            assert s.size == len(data) and bytes(s.buffer()) == data
            c.release(s, "big")
            with pytest.raises(pinpool.PinpoolError, match="acquire"):
                c.get("big")
            c.put("big", b"small")  # a small put replaces it
            assert c.get("big") == b"small"
            c.remove("big")
    finally:
        assert d.stop() == 0
