"""--gms answers decoded as GMS's own client decodes them: msgspec tagged structs
with strict types (a missing required field, a wrong type or an unknown tag is an
error), requests encoded by msgspec as GMS's client encodes them (Optional fields
sent as nil).  The structs here are this file's own, written from the field lists
of gpu_memory_service's common/protocol/messages.py: the later names (decoded
with one Union, as its Decoder(Message) does) and, separately, the earlier
generation's GetAllocationStateResponse (total_bytes required).
"""
import os
import socket
import struct
from typing import List, Optional, Union

import pytest

msgspec = pytest.importorskip("msgspec")

from test_gms import MiB, finish, gms_daemon  # noqa: E402

S = msgspec.Struct


class HandshakeRequest(S, tag="handshake_request"):
    lock_type: str
    timeout_ms: Optional[int] = None


class HandshakeResponse(S, tag="handshake_response"):
    success: bool
    committed: bool
    granted_lock_type: Optional[str] = None


class CommitRequest(S, tag="commit_request"):
    pass


class CommitResponse(S, tag="commit_response"):
    success: bool


class GetLockStateRequest(S, tag="get_lock_state_request"):
    pass


class GetLockStateResponse(S, tag="get_lock_state_response"):
    state: str
    has_rw_session: bool
    ro_session_count: int
    waiting_writers: int
    committed: bool
    is_ready: bool
    layout_committed: bool = False


class GetAllocationStateRequest(S, tag="get_allocation_state_request"):
    pass


class GetAllocationStateResponse(S, tag="get_allocation_state_response"):
    allocation_count: int


class AllocateRequest(S, tag="allocate_request"):
    size: int
    tag: str = "default"


class AllocateResponse(S, tag="allocate_response"):
    allocation_id: str
    size: int
    aligned_size: int
    layout_slot: int


class ExportAllocationRequest(S, tag="export_allocation_request"):
    allocation_id: str


class ExportAllocationResponse(S, tag="export_allocation_response"):
    allocation_id: str
    size: int
    aligned_size: int
    tag: str
    layout_slot: int


class GetAllocationRequest(S, tag="get_allocation_request"):
    allocation_id: str


class GetAllocationResponse(S, tag="get_allocation_response"):
    allocation_id: str
    size: int
    aligned_size: int
    tag: str
    layout_slot: int


class ListAllocationsRequest(S, tag="list_allocations_request"):
    tag: Optional[str] = None


class ListAllocationsResponse(S, tag="list_allocations_response"):
    allocations: List[GetAllocationResponse] = []


class FreeAllocationRequest(S, tag="free_allocation_request"):
    allocation_id: str


class FreeAllocationResponse(S, tag="free_allocation_response"):
    success: bool


class ErrorResponse(S, tag="error_response"):
    error: str
    code: int = 0


class MetadataPutRequest(S, tag="metadata_put_request"):
    key: str
    allocation_id: str
    offset_bytes: int
    value: bytes


class MetadataPutResponse(S, tag="metadata_put_response"):
    success: bool


class MetadataGetRequest(S, tag="metadata_get_request"):
    key: str


class MetadataGetResponse(S, tag="metadata_get_response"):
    found: bool
    allocation_id: Optional[str] = None
    offset_bytes: Optional[int] = None
    value: Optional[bytes] = None


class MetadataDeleteRequest(S, tag="metadata_delete_request"):
    key: str


class MetadataDeleteResponse(S, tag="metadata_delete_response"):
    deleted: bool


class MetadataListRequest(S, tag="metadata_list_request"):
    prefix: str = ""


class MetadataListResponse(S, tag="metadata_list_response"):
    keys: List[str] = []


class GetStateHashRequest(S, tag="get_memory_layout_hash_request"):
    pass


class GetStateHashResponse(S, tag="get_memory_layout_hash_response"):
    memory_layout_hash: str


class GetRuntimeStateRequest(S, tag="get_runtime_state_request"):
    pass


class GetRuntimeStateResponse(S, tag="get_runtime_state_response"):
    state: str
    has_rw_session: bool
    ro_session_count: int
    waiting_writers: int
    committed: bool
    is_ready: bool
    allocation_count: int = 0
    memory_layout_hash: str = ""
    layout_committed: bool = False


Response = Union[HandshakeResponse, CommitResponse, GetLockStateResponse,
                 GetAllocationStateResponse, AllocateResponse, ExportAllocationResponse,
                 GetAllocationResponse, ListAllocationsResponse, FreeAllocationResponse,
                 ErrorResponse, MetadataPutResponse, MetadataGetResponse,
                 MetadataDeleteResponse, MetadataListResponse, GetStateHashResponse,
                 GetRuntimeStateResponse]


class EarlierGetAllocationStateResponse(S, tag="get_allocation_state_response"):
    allocation_count: int
    total_bytes: int


enc = msgspec.msgpack.Encoder()
dec = msgspec.msgpack.Decoder(Response)


class Client:
    """Frames as GMS's wire.py: 4-byte big-endian length, then the message."""

    def __init__(self, path, lock, timeout_ms=None):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(10)
        self.s.connect(path)
        self.hs = self.call(HandshakeRequest(lock_type=lock, timeout_ms=timeout_ms))

    def raw(self, msg):
        body = enc.encode(msg)
        self.s.sendall(struct.pack("!I", len(body)) + body)
        data, fds, _, _ = socket.recv_fds(self.s, 4, 1)
        while len(data) < 4:
            data += self.s.recv(4 - len(data))
        (n,) = struct.unpack("!I", data)
        body = b""
        while len(body) < n:
            chunk = self.s.recv(n - len(body))
            assert chunk, "closed mid-frame"
            body += chunk
        return body, (fds[0] if fds else -1)

    def call(self, msg, want_fd=False):
        body, fd = self.raw(msg)
        out = dec.decode(body)  # raises on a missing field, a wrong type, an unknown tag
        if want_fd:
            return out, fd
        if fd >= 0:
            os.close(fd)
        return out


def test_every_answer_decodes_as_gms_decodes_it():
    d = gms_daemon()
    try:
        path = d.gms_path
        st = Client.__new__(Client)  # a runtime-state probe: no handshake
        st.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        st.s.settimeout(10)
        st.s.connect(path)
        rs = st.call(GetRuntimeStateRequest())
        assert isinstance(rs, GetRuntimeStateResponse) and rs.state == "EMPTY"

        w = Client(path, "rw")
        assert w.hs == HandshakeResponse(success=True, committed=False, granted_lock_type="rw")
        a = w.call(AllocateRequest(size=3 * MiB, tag="weights"))
        assert isinstance(a, AllocateResponse) and a.aligned_size == 4 * MiB
        ex, fd = w.call(ExportAllocationRequest(allocation_id=a.allocation_id), want_fd=True)
        assert isinstance(ex, ExportAllocationResponse) and fd >= 0
        os.close(fd)
        assert isinstance(w.call(GetAllocationRequest(allocation_id=a.allocation_id)),
                          GetAllocationResponse)
        lst = w.call(ListAllocationsRequest())  # tag=None goes as nil
        assert isinstance(lst, ListAllocationsResponse) and len(lst.allocations) == 1
        assert lst.allocations[0].allocation_id == a.allocation_id
        assert w.call(ListAllocationsRequest(tag="nope")).allocations == []
        assert w.call(MetadataPutRequest(key="k", allocation_id=a.allocation_id, offset_bytes=8,
                                         value=b"\x00\xff")) == MetadataPutResponse(success=True)
        assert w.call(MetadataGetRequest(key="k")) == MetadataGetResponse(
            found=True, allocation_id=a.allocation_id, offset_bytes=8, value=b"\x00\xff")
        assert w.call(MetadataGetRequest(key="x")) == MetadataGetResponse(found=False)
        assert w.call(MetadataListRequest()) == MetadataListResponse(keys=["k"])
        assert w.call(MetadataPutRequest(key="gone", allocation_id=a.allocation_id,
                                         offset_bytes=0, value=b"")).success
        assert w.call(MetadataDeleteRequest(key="gone")) == MetadataDeleteResponse(deleted=True)
        b = w.call(AllocateRequest(size=MiB))
        assert w.call(FreeAllocationRequest(allocation_id=b.allocation_id)) == \
            FreeAllocationResponse(success=True)
        ls = w.call(GetLockStateRequest())
        assert isinstance(ls, GetLockStateResponse) and ls.state == "RW" and ls.has_rw_session
        assert w.call(GetAllocationStateRequest()) == GetAllocationStateResponse(allocation_count=1)
        body, _ = w.raw(GetAllocationStateRequest())
        old = msgspec.msgpack.decode(body, type=EarlierGetAllocationStateResponse)
        assert old.total_bytes == 4 * MiB
        assert w.call(GetStateHashRequest()) == GetStateHashResponse(memory_layout_hash="")
        e = w.call(ExportAllocationRequest(allocation_id="nope"))
        assert isinstance(e, ErrorResponse) and "Unknown allocation" in e.error
        assert w.call(CommitRequest()) == CommitResponse(success=True)

        r = Client(path, "rw_or_ro", timeout_ms=2000)
        assert r.hs == HandshakeResponse(success=True, committed=True, granted_lock_type="ro")
        h = r.call(GetStateHashRequest())
        assert isinstance(h, GetStateHashResponse) and len(h.memory_layout_hash) == 64
        ls = r.call(GetLockStateRequest())
        assert ls.state == "RO" and ls.is_ready and ls.committed and ls.ro_session_count == 1
        e = r.call(AllocateRequest(size=MiB))
        assert isinstance(e, ErrorResponse) and "requires RW session" in e.error
        t = Client(path, "rw", timeout_ms=50)
        assert t.hs == HandshakeResponse(success=False, committed=True, granted_lock_type=None)
    finally:
        finish(d)
