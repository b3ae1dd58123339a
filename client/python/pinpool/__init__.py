"""pinpool: Python client of the node-local pinned-memory daemon `pinpool serve`.

Pure Python over libpinpool.so (ctypes; `pip install ./client/python` puts the
library and its private libraries in the package); the library is loaded on first
use, so importing needs neither the library, numpy, torch, a GPU, nor a running daemon.

    pinpool.Client(socket=None)                  alloc / free / free_all / attach / detach /
                                                 info / ping; named objects: release /
                                                 acquire / put / get / exists / remove and
                                                 batch_*; swap_alloc / swap_register /
                                                 swap_pause / swap_resume / swap_wait /
                                                 swap_drop / swap_info / swap_config
    pinpool.Slice                                host slices: buffer(), as_array(); device
                                                 slices: __cuda_array_interface__; as_tensor()
    pinpool.ServerPinnedMemoryPool(dtype, pool_size=2, chunk_size_mb=1)
                                                 drop-in for lpllm's PinnedMemoryPool
    pinpool.torch_memory_saver                   torch_memory_saver 0.0.10's API (import
                                                 torch_memory_saver from it), not imported here
    pinpool.weights                              tensor manifests: publish / builder / attach /
                                                 load_into / versions / drop / collect

client/python/README.md lists every call.
"""

from ._lib import (ConnectError, InvalidArgumentError, NotFoundError, OutOfPoolMemoryError,
                   PermissionDeniedError, PinpoolError, SessionError)
from .client import ALLOC_GPU_ONLY, ALLOC_KEEP, HOST, Client, Slice
from .pool import ServerPinnedMemoryPool
from . import weights  # noqa: E402 (needs neither numpy nor torch to import)

__version__ = "0.1.0"


def library_version():
    """The loaded libpinpool's version string (loads the library)."""
    from . import _lib

    return _lib.lib().pinpool_version().decode()


__all__ = ["Client", "Slice", "HOST", "ALLOC_GPU_ONLY", "ALLOC_KEEP", "ServerPinnedMemoryPool", "PinpoolError",
           "InvalidArgumentError", "OutOfPoolMemoryError", "NotFoundError",
           "PermissionDeniedError", "ConnectError", "SessionError", "library_version",
           "__version__", "weights"]
