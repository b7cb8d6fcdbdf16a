"""DDP communication hooks whose compression state lives in terse.

    from terse.torch import hooks
    state = hooks.CompressedState(codec="cnat8")          # or sign (EF), topk (EF), natdither, fp32
    ddp.register_comm_hook(state, hooks.compressed_hook)
    ...
    ckpt = {"model": ddp.state_dict(), "comm": state.state_dict()}
    state.load_state_dict(ckpt["comm"])

One persistent terse handle per bucket.index(), made on the bucket's first
call and made again when DDP rebuilds its buckets (after the first
iteration: another size or other parameters), so residuals never cross
tensors. The hook starts the non-blocking step and returns a
torch.futures.Future that terse's completion thread fulfils: the backward
pass goes on meanwhile, nobody spins. The output is the mean over ranks, as
DDP's own allreduce hook gives.
"""
import numpy as np
import torch
import torch.distributed as dist

from .. import handles
from ..comm import Comm

_comms = {}


def comm_for(process_group=None):
    """The terse communicator of a process group: its own if the group is a
    terse one, else one made once through the default Store (every rank of
    the group must call this, in the same order)."""
    pg = process_group or dist.distributed_c10d._get_default_group()
    comm = getattr(pg, "terse_comm", None)
    if comm is not None:
        return comm
    key = id(pg)
    if key not in _comms:
        store = dist.distributed_c10d._get_default_store()
        _comms[key] = Comm.from_store(store, dist.get_rank(pg), dist.get_world_size(pg),
                                      prefix="terse-hooks/%d" % len(_comms))
    return _comms[key]


def _layout(bucket):
    """(parameter ids, [(parameter, offset, numel)]) of a bucket's flat buffer."""
    buf = bucket.buffer()
    base, item = buf.data_ptr(), buf.element_size()
    params = bucket.parameters()
    grads = bucket.gradients()
    lay = [(p, (g.data_ptr() - base) // item, g.numel()) for p, g in zip(params, grads)]
    return tuple(id(p) for p in params), lay


class _BucketState:
    """Per-bucket handles, remade on a bucket rebuild; checkpoints."""

    def __init__(self, comm, process_group):
        self.comm = comm if comm is not None else comm_for(process_group)
        self.buckets = {}   # index -> (key, handle, layout)
        self._pending = {}  # index -> a state dict loaded before the bucket exists
        self.rebuilds = 0

    def _make(self, index, count):
        raise NotImplementedError

    def bucket(self, bucket):
        buf = bucket.buffer()
        if buf.dtype != torch.float32:
            raise TypeError("terse hooks: bucket %d holds %s gradients; terse compresses float32"
                            % (bucket.index(), buf.dtype))
        idx = bucket.index()
        key, lay = _layout(bucket)
        key = (buf.numel(), key)
        have = self.buckets.get(idx)
        if have is None or have[0] != key:
            if have is not None:
                self.rebuilds += 1
                have[1].close()
            h = self._make(idx, buf.numel())
            sd = self._pending.pop(idx, None)
            if sd is not None and sd["count"] == buf.numel():
                h.load_state_dict(sd)
            have = (key, h, lay)
            self.buckets[idx] = have
        return have[1], have[2]

    def state_dict(self):
        return {"buckets": {i: h.state_dict() for i, (_, h, _) in self.buckets.items()}}

    def load_state_dict(self, sd):
        """Restores every bucket's state; buckets not made yet get theirs when they are."""
        for i, s in sd["buckets"].items():
            have = self.buckets.get(i)
            if have is not None and have[1].count == s["count"]:
                have[1].load_state_dict(s)
            else:
                self._pending[i] = s


class CompressedState(_BucketState):
    """State of compressed_hook: every keyword is a terse.CompressedAllreduce
    parameter (codec, ratio, levels, bucket, error_feedback,
    error_average_every, server_error_feedback, algo, seed)."""

    def __init__(self, comm=None, process_group=None, **params):
        super().__init__(comm, process_group)
        params.setdefault("codec", "cnat8")
        params.setdefault("op", "avg")
        self.params = params

    def _make(self, index, count):
        p = dict(self.params)
        p["seed"] = int(p.get("seed", 0)) * 1000003 + index  # independent streams per bucket
        return handles.CompressedAllreduce(self.comm, count, **p)

    def stats(self):
        return {i: h.stats() for i, (_, h, _) in self.buckets.items()}


def compressed_hook(state, bucket):
    """The compressed mean of a bucket: non-blocking; a future of the buffer."""
    h, _ = state.bucket(bucket)
    buf = bucket.buffer()
    return h.allreduce(buf, async_op=True).get_future()


def cnat_state(**kw):
    """Natural compression (8 bits per value, unbiased)."""
    return CompressedState(codec="cnat8", **kw)


def natdither_state(levels=8, **kw):
    return CompressedState(codec="natdither", levels=levels, **kw)


def sign_ef_state(**kw):
    """Scaled sign with error feedback (1 bit per value)."""
    kw.setdefault("error_feedback", True)
    return CompressedState(codec="sign", **kw)


def topk_ef_state(ratio=0.01, **kw):
    kw.setdefault("error_feedback", True)
    return CompressedState(codec="topk", ratio=ratio, **kw)


def allreduce_hook(state, bucket):
    """terse's dense mean (no compression): state is a terse Comm, or None
    for the default group's."""
    comm = state if isinstance(state, Comm) else comm_for(None)
    buf = bucket.buffer()
    req = comm.allreduce(buf, op="avg", async_op=True)
    return req.get_future()


class SASGState(_BucketState):
    """State of sasg_hook (per bucket: terse.SASG in gradient units, lr = 1).

    SASG uploads a rank's top-k only when its gradient changed enough since
    its last upload, against a threshold made of the model's last D steps:
    the state needs the learning rate (lr, or the optimizer to read it from
    at every step). The rule compares the gradient with the one at the
    stale model on the same minibatch, which needs a second backward pass a
    hook cannot make: the hook compares with the gradient it uploaded last
    (as LAG's lazily aggregated variant does). For the exact rule call
    terse.SASG from the training loop."""

    def __init__(self, comm=None, process_group=None, ratio=0.01, D=10, c=1.0, values="fp32", lr=None,
                 optimizer=None):
        if lr is None and optimizer is None:
            raise ValueError("terse SASGState: pass optimizer= (or lr=): the skip rule's threshold is "
                             "made of the model's steps, which scale with the learning rate")
        super().__init__(comm, process_group)
        self.params = dict(ratio=ratio, D=D, c=c, values=values)
        self.lr, self.optimizer = lr, optimizer
        self.last = {}

    def _make(self, index, count):
        self.last.pop(index, None)
        return handles.SASG(self.comm, count, lr=1.0, **self.params)

    def learning_rate(self):
        return float(self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else self.lr)

    def stats(self):
        return {i: h.stats() for i, (_, h, _) in self.buckets.items()}


def sasg_hook(state, bucket):
    """The bucket's lazily aggregated sparse mean (SASG): non-blocking."""
    h, lay = state.bucket(bucket)
    idx = bucket.index()
    grad = bucket.buffer()
    g = grad.detach().numpy().copy()
    theta = torch.empty(grad.numel(), dtype=torch.float32)
    for p, off, n in lay:
        theta[off:off + n] = p.detach().reshape(-1)
    n = float(state.comm.size)
    change = None
    if h.need_change:
        last = state.last.get(idx)
        if last is None:
            change = float("inf")
        else:
            # The handle works in gradient units (lr 1) and DDP applies the
            # mean, lr * sum / n: the paper's rule |dg|^2 > thr(alpha) with
            # alpha = lr / n is |dg|^2 * n / lr > thr(1).
            d = (g - last).astype(np.float64)
            change = float(np.dot(d, d)) * n / state.learning_rate()
    update = np.empty(grad.numel(), np.float32)
    req = h.step(theta.numpy(), g, change_sq=change, update=update, async_op=True)
    fut = req.get_future()

    def done(f):
        upd, uploaded = f.value()
        if uploaded:
            state.last[idx] = g
        grad.copy_(torch.from_numpy(upd)).div_(n)
        return grad
    return fut.then(done)


class StepAhead:
    """Step-ahead for a compressed hook with error feedback: the gradient of
    the next step is taken at y = x - lr * e, e being each bucket's residual.

        sa = StepAhead(state, optimizer)
        with sa:                      # parameters at y
            loss_fn(ddp(x), t).backward()
        optimizer.step()              # x updated with the gradient taken at y

    lr is read from the optimizer's first parameter group at every entry."""

    def __init__(self, state, optimizer=None, lr=None):
        self.state, self.optimizer, self.lr = state, optimizer, lr
        self._saved = []

    def __enter__(self):
        lr = self.lr if self.optimizer is None else self.optimizer.param_groups[0]["lr"]
        self._saved = []
        with torch.no_grad():
            for _, h, lay in self.state.buckets.values():
                e = torch.from_numpy(h.residual())
                for p, off, n in lay:
                    self._saved.append((p, p.detach().clone()))
                    p.sub_(e[off:off + n].view_as(p), alpha=lr)
        return self

    def __exit__(self, *exc):
        with torch.no_grad():
            for p, x in self._saved:
                p.copy_(x)
        self._saved = []
