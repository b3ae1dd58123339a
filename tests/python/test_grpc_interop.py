"""A stock grpcio client, its stubs generated from proto/pinpool.proto with
grpcio-tools in this test: the proto is ordinary gRPC, usable from any language.

proto3 defaults device_id to 0, which means GPU 0: a stock client asks for host
memory with device_id=-1.  Slices of a client_id with no fd-socket session have
no lease: they stay until freed (slice_id 0 frees all of them).
"""
import importlib
import sys

import grpc
import pytest
from grpc_tools import protoc

import pinpool
from conftest import REPO

MiB = 1 << 20


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    out = tmp_path_factory.mktemp("stubs")
    proto = REPO / "proto"
    rc = protoc.main(["grpc_tools.protoc", f"-I{proto}", f"--python_out={out}",
                      f"--grpc_python_out={out}", str(proto / "pinpool.proto")])
    assert rc == 0, "protoc failed"
    sys.path.insert(0, str(out))
    try:
        pb2 = importlib.import_module("pinpool_pb2")
        pb2_grpc = importlib.import_module("pinpool_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return pb2, pb2_grpc


@pytest.fixture
def stub(daemon, stubs):
    pb2, pb2_grpc = stubs
    with grpc.insecure_channel(f"unix:{daemon.socket}") as channel:
        yield pb2, pb2_grpc.PinPoolStub(channel)


def pinpool_code(err):
    return dict(err.trailing_metadata() or ()).get("pinpool-error")


def test_info_alloc_free(stub):
    pb2, s = stub
    info = s.GetPoolInfo(pb2.GetPoolInfoRequest(), timeout=10)
    assert info.capacity_bytes == 256 * MiB and info.chunk_size == 16 * MiB
    assert info.used_bytes == 0
    r = s.AllocatePoolMemory(pb2.AllocatePoolMemoryRequest(
        client_id="grpcio-job", device_id=-1, size_bytes=3 * MiB + 1, tag="stock"), timeout=10)
    assert r.slice_id > 0 and r.size_bytes == 3 * MiB + 1 and r.extent_bytes >= r.size_bytes
    assert r.host_backend == "memfd" and len(r.chunks) == 1 and r.chunk_size == 16 * MiB
    info = s.GetPoolInfo(pb2.GetPoolInfoRequest(), timeout=10)
    assert info.used_bytes == r.extent_bytes
    clients = {c.client_id: c for c in info.clients}
    assert clients["grpcio-job"].slices == 1 and clients["grpcio-job"].pid == 0
    f = s.FreePoolMemory(pb2.FreePoolMemoryRequest(client_id="grpcio-job", slice_id=r.slice_id),
                         timeout=10)
    assert f.success and f.freed_bytes == r.extent_bytes and f.freed_slices == 1
    s.Ping(pb2.PingRequest(), timeout=10)


def test_error_statuses(stub):
    pb2, s = stub
    Alloc, Free = pb2.AllocatePoolMemoryRequest, pb2.FreePoolMemoryRequest
    cases = [
        (lambda: s.AllocatePoolMemory(Alloc(client_id="j", device_id=-1, size_bytes=0)),
         grpc.StatusCode.INVALID_ARGUMENT, "-1001"),
        (lambda: s.AllocatePoolMemory(Alloc(client_id="j", device_id=-1, size_bytes=1 << 40)),
         grpc.StatusCode.INVALID_ARGUMENT, "-1002"),
        (lambda: s.AllocatePoolMemory(Alloc(client_id="j", size_bytes=MiB)),  # device 0
         grpc.StatusCode.INVALID_ARGUMENT, "-1004"),
        (lambda: s.FreePoolMemory(Free(client_id="j", slice_id=999999)),
         grpc.StatusCode.NOT_FOUND, "-1006"),
    ]
    for call, status, code in cases:
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == status, e.value.details()
        assert pinpool_code(e.value) == code
        assert e.value.details()

    filler = s.AllocatePoolMemory(Alloc(client_id="filler", device_id=-1, size_bytes=250 * MiB))
    with pytest.raises(grpc.RpcError) as e:
        s.AllocatePoolMemory(Alloc(client_id="j", device_id=-1, size_bytes=16 * MiB))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "largest free extent" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        s.FreePoolMemory(Free(client_id="thief", slice_id=filler.slice_id))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert pinpool_code(e.value) == "-1007"
    f = s.FreePoolMemory(Free(client_id="filler", slice_id=0))  # all of the client's
    assert f.freed_slices == 1


def test_interop_with_the_library(daemon, stub):
    """The stock client sees the library's sessions, and refuses to touch them."""
    pb2, s = stub
    with pinpool.Client(daemon.socket) as c, \
            pinpool.ServerPinnedMemoryPool(pool_size=0.0625, client=c, lease_mb=4) as p:
        blocks = [p.alloc(1000) for _ in range(10)]
        own = c.alloc(2 * MiB)
        info = s.GetPoolInfo(pb2.GetPoolInfoRequest(), timeout=10)
        me = {u.client_id: u for u in info.clients}[c.client_id]
        assert me.slices == 2, "the arena's lease and the plain slice; blocks cost no slice"
        assert me.bytes == 4 * MiB + 2 * MiB and me.pid > 0
        with pytest.raises(grpc.RpcError) as e:
            s.FreePoolMemory(pb2.FreePoolMemoryRequest(client_id="other", slice_id=own.id))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # knowing a session's client_id is not enough: its calls carry the
        # session's secret token (the fd socket's greeting), which a stock client lacks
        with pytest.raises(grpc.RpcError) as e:
            s.FreePoolMemory(pb2.FreePoolMemoryRequest(client_id=c.client_id, slice_id=own.id))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "must carry its token" in e.value.details()
        assert c.free(own) == 2 * MiB
        stock = s.AllocatePoolMemory(pb2.AllocatePoolMemoryRequest(
            client_id="stock", device_id=-1, size_bytes=MiB))
        assert c.info()["clients"] and any(u["client_id"] == "stock" for u in c.info()["clients"])
        s.FreePoolMemory(pb2.FreePoolMemoryRequest(client_id="stock", slice_id=stock.slice_id))
        for b in blocks:
            p.free(b)
