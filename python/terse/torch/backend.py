"""The "terse" torch.distributed backend: an unmodified script runs with
init_process_group("terse") once `import terse.torch` registered it.

A Python subclass of ProcessGroup (torch 1.13 accepts one): allreduce,
reduce, broadcast, allgather (and _allgather_base), reduce_scatter (and
_reduce_scatter_base), alltoall / alltoall_base (even and uneven), gather,
scatter, barrier; point-to-point send/recv are not offered (terse has no
point-to-point API) and raise. Each call starts a
non-blocking terse collective and returns a Work whose future terse's
completion thread fulfils, so DDP overlaps it with the backward pass.
Non-contiguous tensors go through a contiguous copy (copied back when the
collective ends). Ops: SUM, PRODUCT, MIN, MAX, AVG; bitwise ops raise.
The communicator bootstraps through the Store torch hands the backend.
"""
from datetime import timedelta

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import _create_work_from_future

from ..comm import Comm

_OPS = {dist.ReduceOp.SUM: "sum", dist.ReduceOp.PRODUCT: "prod", dist.ReduceOp.MIN: "min",
        dist.ReduceOp.MAX: "max", dist.ReduceOp.AVG: "avg"}


def _op(opts):
    op = getattr(opts, "reduceOp", dist.ReduceOp.SUM)
    for k, v in _OPS.items():
        if op == k:
            return v
    raise ValueError("terse backend: reduce op %s is not supported (SUM, PRODUCT, MIN, MAX, AVG)" % op)


def _done_work(result):
    f = torch.futures.Future()
    f.set_result(result)
    return _create_work_from_future(f)


def _unflatten(flat, tensors):
    """Copies consecutive pieces of flat into tensors."""
    off = 0
    for t in tensors:
        t.copy_(flat[off:off + t.numel()].view_as(t))
        off += t.numel()


class _Contig:
    """A tensor as terse can take it, and how to put the result back."""

    def __init__(self, t):
        self.t = t
        self.c = t if t.is_contiguous() else t.contiguous()

    def back(self):
        if self.c is not self.t:
            self.t.copy_(self.c)


class ProcessGroupTerse(dist.ProcessGroup):
    def __init__(self, store, rank, size, timeout=timedelta(minutes=30)):
        super().__init__(rank, size)
        self.terse_comm = Comm.from_store(store, rank, size, prefix="terse-pg",
                                          boot_timeout=timeout.total_seconds())

    def getBackendName(self):
        return "terse"

    def _work(self, req, result, after=None):
        """A Work completed with result when req (a terse Request) ends."""
        fut = torch.futures.Future()

        def done(r):
            if r._error is not None:
                fut.set_exception(r._error)
                return
            try:
                if after is not None:
                    after()
                fut.set_result(result)
            except Exception as e:  # noqa: BLE001 - reported through the future
                fut.set_exception(e)
        req.add_done_callback(done)
        return _create_work_from_future(fut)

    def _each(self, tensors, start, result=None):
        """One request per tensor; the Work ends with the last (they end in order)."""
        cs = [_Contig(t) for t in tensors]
        req = None
        for c in cs:
            req = start(c.c)
        if req is None:
            return _done_work(result if result is not None else tensors)

        def back():
            for c in cs:
                c.back()
        return self._work(req, result if result is not None else tensors, back)

    def allreduce(self, tensors, opts=None):
        op = _op(opts) if opts is not None else "sum"
        return self._each(tensors, lambda t: self.terse_comm.allreduce(t, op=op, async_op=True))

    def allreduce_coalesced(self, tensors, opts=None):
        return self.allreduce(tensors, opts)

    def reduce(self, tensors, opts):
        op, root = _op(opts), opts.rootRank
        return self._each(tensors, lambda t: self.terse_comm.reduce(t, root=root, op=op, async_op=True))

    def broadcast(self, tensors, opts):
        root = opts.rootRank
        return self._each(tensors, lambda t: self.terse_comm.broadcast(t, root=root, async_op=True))

    def _allgather_base(self, output, input, opts=None):
        o, i = _Contig(output), _Contig(input)
        req = self.terse_comm.allgather(i.c.reshape(-1), out=o.c.reshape(-1), async_op=True)
        return self._work(req, [output], o.back)

    def allgather(self, output_tensors, input_tensors, opts=None):
        outs, inp = output_tensors[0], _Contig(input_tensors[0])
        if len(outs) != self.size():
            raise ValueError("terse backend: allgather needs %d output tensors, got %d"
                             % (self.size(), len(outs)))
        flat = torch.empty(inp.c.numel() * self.size(), dtype=inp.c.dtype)
        req = self.terse_comm.allgather(inp.c.reshape(-1), out=flat, async_op=True)
        return self._work(req, output_tensors, lambda: _unflatten(flat, outs))

    def _reduce_scatter_base(self, output, input, opts=None):
        op = _op(opts) if opts is not None else "sum"
        o, i = _Contig(output), _Contig(input)
        req = self.terse_comm.reduce_scatter(i.c.reshape(-1), op=op, out=o.c.reshape(-1), async_op=True)
        return self._work(req, [output], o.back)

    def reduce_scatter(self, output_tensors, input_tensors, opts=None):
        op = _op(opts) if opts is not None else "sum"
        out, ins = _Contig(output_tensors[0]), input_tensors[0]
        flat = torch.cat([t.reshape(-1) for t in ins])
        req = self.terse_comm.reduce_scatter(flat, op=op, out=out.c.reshape(-1), async_op=True)
        return self._work(req, output_tensors, out.back)

    def alltoall_base(self, output, input, output_split_sizes, input_split_sizes, opts=None):
        o, i = _Contig(output), _Contig(input)
        if not output_split_sizes and not input_split_sizes:
            req = self.terse_comm.alltoall(i.c.reshape(-1), out=o.c.reshape(-1), async_op=True)
            return self._work(req, [output], o.back)
        row_i = i.c[0].numel() if i.c.dim() and i.c.shape[0] else 1
        row_o = o.c[0].numel() if o.c.dim() and o.c.shape[0] else 1
        n = self.size()
        sc = [s * row_i for s in input_split_sizes] if input_split_sizes else [i.c.numel() // n] * n
        rc = [s * row_o for s in output_split_sizes] if output_split_sizes else [o.c.numel() // n] * n
        req = self.terse_comm.alltoallv(i.c.reshape(-1), sc, rc, out=o.c.reshape(-1), async_op=True)
        return self._work(req, [output], o.back)

    def alltoall(self, output_tensors, input_tensors, opts=None):
        flat_in = torch.cat([t.reshape(-1) for t in input_tensors])
        rc = [t.numel() for t in output_tensors]
        flat_out = torch.empty(sum(rc), dtype=flat_in.dtype)
        req = self.terse_comm.alltoallv(flat_in, [t.numel() for t in input_tensors], rc, out=flat_out,
                                        async_op=True)
        return self._work(req, output_tensors, lambda: _unflatten(flat_out, output_tensors))

    def gather(self, output_tensors, input_tensors, opts):
        root, inp = opts.rootRank, _Contig(input_tensors[0])
        outs = output_tensors[0] if self.rank() == root else None
        if outs is not None and len(outs) != self.size():
            raise ValueError("terse backend: gather needs %d output tensors on the root, got %d"
                             % (self.size(), len(outs)))
        flat = torch.empty(inp.c.numel() * self.size(), dtype=inp.c.dtype) if outs is not None else None
        req = self.terse_comm.gather(inp.c.reshape(-1), root=root, out=flat, async_op=True)
        return self._work(req, output_tensors, (lambda: _unflatten(flat, outs)) if outs is not None else None)

    def scatter(self, output_tensors, input_tensors, opts):
        root, out = opts.rootRank, _Contig(output_tensors[0])
        flat = None
        if self.rank() == root:
            ins = input_tensors[0]
            if len(ins) != self.size():
                raise ValueError("terse backend: scatter needs %d input tensors on the root, got %d"
                                 % (self.size(), len(ins)))
            flat = torch.cat([t.reshape(-1) for t in ins])
        req = self.terse_comm.scatter(flat, out.c.reshape(-1), root=root, async_op=True)
        return self._work(req, output_tensors, out.back)

    def _no_p2p(self, *args, **kw):
        raise RuntimeError("terse backend: point-to-point send/recv is not supported (terse offers "
                           "collectives only); use a gloo group for it: dist.new_group(backend='gloo')")

    send = recv = recvAnysource = _no_p2p

    def barrier(self, opts=None):
        self.terse_comm.barrier()
        return _done_work([])


def _create(store, rank, size, timeout):
    return ProcessGroupTerse(store, rank, size, timeout)


def register():
    """Register "terse" with torch.distributed (done by `import terse.torch`)."""
    if not hasattr(dist.Backend, "TERSE"):
        dist.Backend.register_backend("terse", _create)
