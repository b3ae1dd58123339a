"""A stand-in for the few torch calls pinpool.torch_memory_saver makes, for
tests/python/test_tms.py where there is no torch and no GPU (with the stand-in
libcuda, device memory is host memory).  Not torch: no caching allocator (each
empty() asks the current pool's allocator, each tensor frees its memory when it
goes), no kernels.  Tensors are flat bytes with a dtype and a shape.
tests/gpu/test_tms.py runs the module on real torch.
"""
import ctypes

from . import cuda  # noqa: F401

__version__ = "0.0-stand-in"


class version:
    cuda = "12.8"
    hip = None


class dtype:
    def __init__(self, name, size):
        self.name, self.itemsize = name, size

    def __repr__(self):
        return f"torch.{self.name}"


uint8 = dtype("uint8", 1)
bfloat16 = dtype("bfloat16", 2)
float32 = dtype("float32", 4)


class Tensor:
    """nbytes of memory at ptr (device memory if is_cuda); owner frees it."""

    def __init__(self, ptr, nbytes, dt, shape, is_cuda, owner=None):
        self.ptr, self.nbytes, self.dtype, self.shape = ptr, nbytes, dt, tuple(shape)
        self.is_cuda, self._owner = is_cuda, owner
        self.device = "cuda:0" if is_cuda else "cpu"

    def data_ptr(self):
        return self.ptr

    def is_contiguous(self):
        return True

    def stride(self):
        return (1,)

    def numel(self):
        n = 1
        for d in self.shape:
            n *= d
        return n

    def view(self, what):
        if isinstance(what, dtype):
            return Tensor(self.ptr, self.nbytes, what, (self.nbytes // what.itemsize,), self.is_cuda,
                          self)
        return Tensor(self.ptr, self.nbytes, self.dtype, what, self.is_cuda, self)

    def clone(self):
        buf = ctypes.create_string_buffer(self.tobytes(), self.nbytes)
        return Tensor(ctypes.addressof(buf), self.nbytes, self.dtype, self.shape, self.is_cuda, buf)

    def tobytes(self):
        return ctypes.string_at(self.ptr, self.nbytes)

    def fill_bytes(self, data):
        ctypes.memmove(self.ptr, data, len(data))


class _Native:
    """Memory outside any custom pool (torch's own allocator)."""

    def __init__(self, n):
        self.buf = ctypes.create_string_buffer(n)
        self.ptr = ctypes.addressof(self.buf)


class _Block:
    def __init__(self, alloc, n, device):
        self.alloc, self.n, self.device = alloc, n, device
        self.ptr = alloc.malloc(n, device, None)
        if not self.ptr:
            raise cuda.OutOfMemoryError(f"CUDA out of memory (the pool's allocator returned NULL for {n})")

    def __del__(self):
        if getattr(self, "ptr", None):
            self.alloc.free(self.ptr, self.n, self.device, None)


def empty(n, dtype=uint8, device="cuda"):
    nbytes = n * dtype.itemsize
    pool = cuda._current_pool()
    if pool is not None and pool.allocator is not None:
        block = _Block(pool.allocator, nbytes, cuda.current_device())
        return Tensor(block.ptr, nbytes, dtype, (n,), True, block)
    native = _Native(nbytes)
    return Tensor(native.ptr, nbytes, dtype, (n,), device != "cpu", native)


def frombuffer(buf, dtype=uint8):
    n = ctypes.sizeof(buf)
    return Tensor(ctypes.addressof(buf), n, dtype, (n // dtype.itemsize,), False, buf)
