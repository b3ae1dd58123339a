"""A stock grpcio client against `pinpool serve --listen`: every call over TCP
must carry `authorization: Bearer TOKEN` with the token in the daemon's
--listen-token-file (made 0600 in its state directory); the unix socket needs
none.  The pinpool package (libpinpool) reads the token from
$PINPOOL_TOKEN_FILE for a "tcp:HOST:PORT" socket.
"""
import importlib
import os
import socket
import stat
import subprocess
import sys

import grpc
import pytest
from grpc_tools import protoc

import pinpool
from conftest import BIN, REPO, Daemon


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    out = tmp_path_factory.mktemp("stubs")
    proto = REPO / "proto"
    rc = protoc.main(["grpc_tools.protoc", f"-I{proto}", f"--python_out={out}",
                      f"--grpc_python_out={out}", str(proto / "pinpool.proto")])
    assert rc == 0, "protoc failed"
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("pinpool_pb2"), importlib.import_module("pinpool_pb2_grpc")
    finally:
        sys.path.remove(str(out))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tcp_daemon():
    port = free_port()
    d = Daemon("--listen", f"127.0.0.1:{port}")
    d.port = port
    d.token_file = os.path.join(d.dir, "state", "listen-token")
    yield d
    assert d.stop() == 0


def test_stock_client_needs_the_token_over_tcp(tcp_daemon, stubs):
    pb2, pb2_grpc = stubs
    st = os.stat(tcp_daemon.token_file)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    token = open(tcp_daemon.token_file).read().strip()
    assert len(token) == 32, "128 random bits as hex"
    with grpc.insecure_channel(f"127.0.0.1:{tcp_daemon.port}") as ch:
        s = pb2_grpc.PinPoolStub(ch)
        for md in (None, [("authorization", "Bearer " + "0" * 32)], [("authorization", token)]):
            with pytest.raises(grpc.RpcError) as e:
                s.GetPoolInfo(pb2.GetPoolInfoRequest(), timeout=10, metadata=md)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, e.value.details()
            assert "--listen-token-file" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            s.AllocatePoolMemory(pb2.AllocatePoolMemoryRequest(
                client_id="tcp-thief", device_id=-1, size_bytes=1 << 20), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        md = [("authorization", "Bearer " + token)]
        info = s.GetPoolInfo(pb2.GetPoolInfoRequest(), timeout=10, metadata=md)
        assert info.used_bytes == 0 and info.num_clients == 0
        r = s.AllocatePoolMemory(pb2.AllocatePoolMemoryRequest(
            client_id="tcp-job", device_id=-1, size_bytes=1 << 20), timeout=10, metadata=md)
        s.FreePoolMemory(pb2.FreePoolMemoryRequest(client_id="tcp-job", slice_id=r.slice_id),
                         timeout=10, metadata=md)
    with grpc.insecure_channel(f"unix:{tcp_daemon.socket}") as ch:
        pb2_grpc.PinPoolStub(ch).Ping(pb2.PingRequest(), timeout=10)  # no token needed


def test_library_and_info_command_read_the_token_file(tcp_daemon, monkeypatch):
    target = f"tcp:127.0.0.1:{tcp_daemon.port}"
    monkeypatch.delenv("PINPOOL_TOKEN_FILE", raising=False)
    p = subprocess.run([BIN, "info", "--socket", target], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode != 0 and "bearer token" in p.stderr
    p = subprocess.run([BIN, "info", "--socket", target, "--token-file", tcp_daemon.token_file],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "capacity" in p.stdout, p.stderr
    monkeypatch.setenv("PINPOOL_TOKEN_FILE", tcp_daemon.token_file)
    p = subprocess.run([BIN, "info", "--socket", target], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr


def test_nul_in_names_is_invalid_argument(daemon, stubs):
    """protobuf-c cuts strings at a NUL: "vic\\0tim" would be client "vic"."""
    pb2, pb2_grpc = stubs
    with grpc.insecure_channel(f"unix:{daemon.socket}") as ch:
        s = pb2_grpc.PinPoolStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            s.AllocatePoolMemory(pb2.AllocatePoolMemoryRequest(
                client_id="vic\0tim", device_id=-1, size_bytes=1 << 20), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        for key in ("abc\0one", "abc\0two"):
            with pytest.raises(grpc.RpcError) as e:
                s.Put(pb2.PutRequest(key=key, data=b"x"), timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert not s.Exists(pb2.ExistsRequest(key="abc"), timeout=10).exists
