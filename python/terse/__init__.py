"""terse: compressed and dense collectives over RDMA verbs and TCP, from Python.

    import terse
    comm = terse.Comm()                       # TERSE_RANK/SIZE, RANK/WORLD_SIZE, OMPI_*, PMI_*...
    comm.allreduce(x)                         # numpy array or CPU tensor, in place
    car = terse.CompressedAllreduce(comm, x.size, codec="cnat8")
    car.allreduce(grad)                       # mean of every rank's compressed grad, with EF
    req = car.allreduce(grad, async_op=True); ...; req.wait()

terse.torch has the DDP communication hooks and the "terse" ProcessGroup
backend. Pure Python over libterse (ctypes); see README "Use it from PyTorch".
"""
from . import _lib
from ._buffers import DTYPE_NAMES
from .comm import Comm, Plan
from .errors import (Busy, InvalidArgument, Mismatch, PeerFailed, TerseError, Timeout,
                     Unsupported)
from .handles import (SASG, AdaCons, CompressedAllreduce, GradientCode, Partial, SparseAllgather,
                      topk)
from .request import Request

__version__ = _lib.lib.terse_version().decode()
library_path = _lib.path

__all__ = ["Comm", "Plan", "Request", "CompressedAllreduce", "SparseAllgather", "SASG", "Partial",
           "AdaCons", "GradientCode", "topk", "TerseError", "InvalidArgument", "Mismatch", "Timeout",
           "PeerFailed", "Busy", "Unsupported", "DTYPE_NAMES", "__version__"]
