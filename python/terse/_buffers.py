"""numpy arrays and CPU torch tensors as terse buffers, without copies.

A buffer must be C-contiguous host memory (a view with strides is refused
with a ValueError naming the fix: .contiguous() / np.ascontiguousarray);
outputs must be writeable. torch is imported only when a tensor is passed.
"""
import sys

import numpy as np

FLOAT32, FLOAT64, FLOAT16, BFLOAT16, INT32, INT64 = range(6)
DTYPE_NAMES = ("float32", "float64", "float16", "bfloat16", "int32", "int64")
ITEMSIZE = (4, 8, 2, 2, 4, 8)

_NP = {np.dtype(np.float32): FLOAT32, np.dtype(np.float64): FLOAT64, np.dtype(np.float16): FLOAT16,
       np.dtype(np.int32): INT32, np.dtype(np.int64): INT64}

OPS = {"sum": 0, "prod": 1, "min": 2, "max": 3, "avg": 4, "mean": 4}


def op_code(op):
    if isinstance(op, int) and 0 <= op <= 4:
        return op
    try:
        return OPS[str(op).lower()]
    except KeyError:
        raise ValueError("terse: unknown reduction op %r (sum, prod, min, max, avg)" % (op,)) from None


def is_tensor(x):
    t = sys.modules.get("torch")
    return t is not None and isinstance(x, t.Tensor)


def _torch_dtype(x):
    import torch
    table = {torch.float32: FLOAT32, torch.float64: FLOAT64, torch.float16: FLOAT16,
             torch.bfloat16: BFLOAT16, torch.int32: INT32, torch.int64: INT64}
    try:
        return table[x.dtype]
    except KeyError:
        raise TypeError("terse: tensor dtype %s is not supported (float32, float64, float16, "
                        "bfloat16, int32, int64)" % x.dtype) from None


class Buf:
    """address, element count, terse dtype code and the object kept alive."""
    __slots__ = ("ptr", "count", "dtype", "obj")

    def __init__(self, ptr, count, dtype, obj):
        self.ptr, self.count, self.dtype, self.obj = ptr, count, dtype, obj

    @property
    def nbytes(self):
        return self.count * ITEMSIZE[self.dtype]


def as_buf(x, what="buffer", writeable=False):
    if is_tensor(x):
        if x.device.type != "cpu":
            raise ValueError("terse: %s is on %s; terse takes host (CPU) tensors" % (what, x.device))
        if x.is_sparse or not x.is_contiguous():
            raise ValueError("terse: %s is not contiguous; pass x.contiguous() (terse does not copy "
                             "behind your back)" % what)
        return Buf(x.data_ptr(), x.numel(), _torch_dtype(x), x)
    if isinstance(x, np.ndarray):
        try:
            dt = _NP[x.dtype]
        except KeyError:
            raise TypeError("terse: array dtype %s is not supported (float32, float64, float16, "
                            "int32, int64)" % x.dtype) from None
        if not x.flags["C_CONTIGUOUS"]:
            raise ValueError("terse: %s is not C-contiguous; pass np.ascontiguousarray(x)" % what)
        if writeable and not x.flags["WRITEABLE"]:
            raise ValueError("terse: %s is read-only" % what)
        return Buf(x.ctypes.data, x.size, dt, x)
    raise TypeError("terse: %s must be a numpy array or a CPU torch tensor, not %s"
                    % (what, type(x).__name__))


def empty_like(x, count):
    """A new flat buffer of count elements of x's kind and dtype."""
    if is_tensor(x):
        import torch
        return torch.empty(count, dtype=x.dtype)
    return np.empty(count, dtype=x.dtype)


def as_float32(x, what):
    b = as_buf(x, what)
    if b.dtype != FLOAT32:
        raise TypeError("terse: %s must be float32, not %s" % (what, DTYPE_NAMES[b.dtype]))
    return b


def same_dtype(a, b, what):
    if a.dtype != b.dtype:
        raise TypeError("terse: %s: dtypes differ (%s and %s)"
                        % (what, DTYPE_NAMES[a.dtype], DTYPE_NAMES[b.dtype]))
