"""The stateful handles: compressed allreduce, sparse allgather, SASG,
partial (straggler-tolerant) allreduce, AdaCons, gradient coding.

Each holds the method's state inside terse (residuals, counters, random
streams) and offers state_dict() / load_state_dict() for checkpoints: a
dict with the handle's parameters and terse's versioned, self-checking state
bytes (a handle created with the same communicator size, rank, count and
parameters resumes bit-exactly; anything else raises InvalidArgument).
"""
import ctypes

import numpy as np

from . import _lib
from ._buffers import DTYPE_NAMES, FLOAT32, as_buf, as_float32, empty_like, op_code
from .errors import check
from .request import Request

L = _lib.lib


def _enc(s):
    return None if s is None else str(s).encode()


class _Handle:
    _destroy = None
    _state_fns = None  # (size, save, load)

    def __init__(self, comm, count, params):
        self.comm, self.count, self.params = comm, int(count), dict(params)
        self._ptr = None
        self._busy = None

    def _check(self, st, what):
        check(st, what, self.comm._ptr)

    def _usable(self):
        if self._ptr is None:
            raise ValueError("terse: %s was closed" % type(self).__name__)
        self.comm._check_usable()

    def close(self):
        if self._ptr is not None and self.comm._usable():
            type(self)._destroy(self._ptr)
        self._ptr = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _vec(self, x, what, writeable=False):
        b = as_buf(x, what, writeable=writeable)
        if b.dtype != FLOAT32:
            raise TypeError("terse: %s must be float32, not %s" % (what, DTYPE_NAMES[b.dtype]))
        if b.count != self.count:
            raise ValueError("terse: %s has %d elements, the handle %d" % (what, b.count, self.count))
        return b

    def state_dict(self):
        size, save, _ = self._state_fns
        self._usable()
        n = size(self._ptr)
        buf = ctypes.create_string_buffer(n)
        self._check(save(self._ptr, buf, n), type(self).__name__ + ".state_dict")
        return {"type": type(self).__name__, "count": self.count, "params": dict(self.params),
                "rank": self.comm.rank, "size": self.comm.size, "state": buf.raw}

    def load_state_dict(self, sd):
        _, _, load = self._state_fns
        self._usable()
        if sd.get("type") != type(self).__name__:
            raise ValueError("terse: a %s state cannot be loaded into a %s"
                             % (sd.get("type"), type(self).__name__))
        data = bytes(sd["state"])
        self._check(load(self._ptr, data, len(data)), type(self).__name__ + ".load_state_dict")


class CompressedAllreduce(_Handle):
    """Persistent compressed allreduce of `count` float32 values.

    codec: fp32, fp16, bf16, cnat8, cnat9, natdither, qsgd, sign, sign1, topk,
    randk, topk+cnat8, randk+cnat8. op: "avg" (default) or "sum". algo: auto,
    allgather, two_phase, ring."""
    _destroy = L.terse_compressed_destroy
    _state_fns = (L.terse_compressed_state_size, L.terse_compressed_save, L.terse_compressed_load)

    def __init__(self, comm, count, codec="cnat8", server_codec=None, ratio=None, levels=None,
                 norm=None, bucket=None, error_feedback=True, server_error_feedback=False,
                 error_average_every=0, op="avg", algo="auto", seed=0):
        super().__init__(comm, count, dict(codec=codec, server_codec=server_codec, ratio=ratio,
                                           levels=levels, norm=norm, bucket=bucket,
                                           error_feedback=error_feedback,
                                           server_error_feedback=server_error_feedback,
                                           error_average_every=error_average_every, op=op,
                                           algo=algo, seed=seed))
        p = _lib.CompressedParams()
        L.terse_compressed_params_init(ctypes.byref(p))
        p.codec, p.server_codec = _enc(codec), _enc(server_codec)
        if ratio is not None:
            p.ratio = float(ratio)
        if levels is not None:
            p.levels = int(levels)
        if norm is not None:
            p.norm = int(norm)
        if bucket is not None:
            p.bucket = int(bucket)
        p.error_feedback = int(bool(error_feedback))
        p.server_error_feedback = int(bool(server_error_feedback))
        p.error_average_every = int(error_average_every)
        p.op = op_code(op)
        algos = {"auto": 0, "allgather": 1, "two_phase": 2, "ring": 3}
        if algo not in algos:
            raise ValueError("terse: algo must be one of %s" % ", ".join(algos))
        p.algo, p.seed = algos[algo], int(seed)
        ptr = ctypes.c_void_p()
        comm._check_usable()
        check(L.terse_compressed_create(comm._ptr, self.count, ctypes.byref(p), ctypes.byref(ptr)),
              "terse_compressed_create (codec %r; TERSE_DEBUG=warn names the bad field)" % codec,
              comm._ptr)
        self._ptr = ptr

    def allreduce(self, x, out=None, async_op=False):
        """out (default: in place) = mean (or sum) of every rank's compressed x."""
        self._usable()
        s = self._vec(x, "compressed allreduce input")
        o = s if out is None else self._vec(out, "compressed allreduce output", writeable=True)
        if not async_op:
            self._check(L.terse_compressed_allreduce(self._ptr, s.ptr, o.ptr),
                        "terse_compressed_allreduce")
            return o.obj
        req = ctypes.c_void_p()
        self._check(L.terse_compressed_allreduce_start(self._ptr, s.ptr, o.ptr, ctypes.byref(req)),
                    "terse_compressed_allreduce_start")
        return Request(self.comm, req, (s, o, self), "terse_compressed_allreduce", o.obj)

    __call__ = allreduce

    def step_ahead(self, x, out=None):
        """y = x - e (e in the units of what was passed in)."""
        self._usable()
        s = self._vec(x, "step_ahead input")
        o = s if out is None else self._vec(out, "step_ahead output", writeable=True)
        self._check(L.terse_compressed_step_ahead(self._ptr, s.ptr, o.ptr), "terse_compressed_step_ahead")
        return o.obj

    def scale_residual(self, factor):
        self._usable()
        self._check(L.terse_compressed_scale_residual(self._ptr, float(factor)),
                    "terse_compressed_scale_residual")

    def residual(self, out=None):
        self._usable()
        out = np.empty(self.count, np.float32) if out is None else out
        o = self._vec(out, "residual output", writeable=True)
        self._check(L.terse_compressed_residual(self._ptr, o.ptr), "terse_compressed_residual")
        return out

    def stats(self):
        self._usable()
        s = _lib.CompressedStats()
        self._check(L.terse_compressed_stats(self._ptr, ctypes.byref(s)), "terse_compressed_stats")
        d = {n: getattr(s, n) for n, _ in _lib.CompressedStats._fields_}
        d["algorithm"], d["codec"] = d["algorithm"].decode(), d["codec"].decode()
        return d


_VALUES = {"fp32": 0, "fp16": 1, "cnat8": 2}


def _values(v):
    if v not in _VALUES:
        raise ValueError("terse: values must be one of %s, not %r" % (", ".join(_VALUES), v))
    return _VALUES[v]


def _indices(idx, what):
    idx = np.ascontiguousarray(np.asarray(idx.numpy() if hasattr(idx, "numpy") else idx))
    if idx.dtype != np.uint32:
        if idx.size and (idx.min() < 0 or idx.max() > 0xFFFFFFFF):
            raise ValueError("terse: %s out of range" % what)
        idx = idx.astype(np.uint32)
    return idx


class SparseAllgather(_Handle):
    """Sparse allgather / allreduce over a vector of n floats: every rank
    contributes k (index, value) pairs, k its own."""
    _destroy = L.terse_sparse_destroy

    def __init__(self, comm, n, values="fp32", dense_switch=True, seed=0):
        super().__init__(comm, n, dict(values=values, dense_switch=dense_switch, seed=seed))
        p = _lib.SparseParams()
        L.terse_sparse_params_init(ctypes.byref(p))
        p.values, p.dense_switch, p.seed = _values(values), int(bool(dense_switch)), int(seed)
        ptr = ctypes.c_void_p()
        comm._check_usable()
        check(L.terse_sparse_create(comm._ptr, self.count, ctypes.byref(p), ctypes.byref(ptr)),
              "terse_sparse_create", comm._ptr)
        self._ptr = ptr

    def _pairs(self, idx, val):
        i = _indices(idx, "sparse indices")
        v = as_float32(val, "sparse values")
        if i.size != v.count:
            raise ValueError("terse: %d indices but %d values" % (i.size, v.count))
        return i, v

    def allgather(self, idx, val):
        """Returns [(indices uint32, values float32)] per rank, ascending by index (copies)."""
        self._usable()
        i, v = self._pairs(idx, val)
        out = _lib.SparseList()
        self._check(L.terse_sparse_allgather(self._ptr, i.ctypes.data, v.ptr, i.size, ctypes.byref(out)),
                    "terse_sparse_allgather")
        if out.total == 0:  # nothing from anyone: the lists may be NULL
            return [(np.empty(0, np.uint32), np.empty(0, np.float32)) for _ in range(self.comm.size)]
        idx_all = np.ctypeslib.as_array(out.idx, (out.total,))
        val_all = np.ctypeslib.as_array(out.val, (out.total,))
        res = []
        for r in range(self.comm.size):
            off, cnt = out.offsets[r], out.counts[r]
            res.append((idx_all[off:off + cnt].copy(), val_all[off:off + cnt].copy()))
        return res

    def allreduce(self, idx, val, out=None, async_op=False):
        """out (n floats) = the sum of every rank's pairs."""
        self._usable()
        i, v = self._pairs(idx, val)
        out = np.empty(self.count, np.float32) if out is None else out
        o = self._vec(out, "sparse allreduce output", writeable=True)
        if not async_op:
            self._check(L.terse_sparse_allreduce(self._ptr, i.ctypes.data, v.ptr, i.size, o.ptr),
                        "terse_sparse_allreduce")
            return out
        req = ctypes.c_void_p()
        self._check(L.terse_sparse_allreduce_start(self._ptr, i.ctypes.data, v.ptr, i.size, o.ptr,
                                                   ctypes.byref(req)), "terse_sparse_allreduce_start")
        return Request(self.comm, req, (o, self), "terse_sparse_allreduce", out)

    def stats(self):
        s = _lib.SparseStats()
        self._check(L.terse_sparse_stats(self._ptr, ctypes.byref(s)), "terse_sparse_stats")
        return {n: getattr(s, n) for n, _ in _lib.SparseStats._fields_}


def topk(x, k, sampled=True):
    """Indices (uint32, ascending) of the k largest |x|, ties to the lower index."""
    b = as_float32(x, "topk input")
    idx = np.empty(int(k), np.uint32)
    check(L.terse_topk_select(b.ptr, b.count, int(k), int(bool(sampled)), idx.ctypes.data),
          "terse_topk_select")
    return idx


class SASG(_Handle):
    """SASG (sparse communication with adaptive aggregated gradients) over a
    parameter vector of n floats; see terse.h for the rule."""
    _destroy = L.terse_sasg_destroy
    _state_fns = (L.terse_sasg_state_size, L.terse_sasg_save, L.terse_sasg_load)

    def __init__(self, comm, n, ratio=0.01, D=10, lr=0.005, c=1.0, sampled_topk=True, values="fp32",
                 offsets=None):
        super().__init__(comm, n, dict(ratio=ratio, D=D, lr=lr, c=c, sampled_topk=sampled_topk,
                                       values=values, offsets=None if offsets is None else list(offsets)))
        p = _lib.SasgParams()
        L.terse_sasg_params_init(ctypes.byref(p))
        p.ratio, p.D, p.lr, p.c = float(ratio), int(D), float(lr), float(c)
        p.sampled_topk, p.values = int(bool(sampled_topk)), _values(values)
        if offsets is not None:
            offs = (ctypes.c_size_t * len(offsets))(*offsets)
            p.ntensors, p.offsets = len(offsets) - 1, offs
        ptr = ctypes.c_void_p()
        comm._check_usable()
        check(L.terse_sasg_create(comm._ptr, self.count, ctypes.byref(p), ctypes.byref(ptr)),
              "terse_sasg_create", comm._ptr)
        self._ptr = ptr

    @property
    def need_change(self):
        """True when this step needs the gradient at stale_point()."""
        return bool(L.terse_sasg_need_change(self._ptr))

    def stale_point(self):
        """A copy of the model at this rank's last upload."""
        p = L.terse_sasg_stale_point(self._ptr)
        return np.ctypeslib.as_array(ctypes.cast(p, ctypes.POINTER(ctypes.c_float)), (self.count,)).copy()

    @property
    def threshold(self):
        return L.terse_sasg_threshold(self._ptr)

    def set_lr(self, lr):
        self._check(L.terse_sasg_set_lr(self._ptr, float(lr)), "terse_sasg_set_lr")

    def step(self, theta, grad, grad_stale=None, change_sq=None, update=None, async_op=False):
        """Returns (update, uploaded): apply theta -= update. Give grad_stale
        (the gradient at stale_point() on the same minibatch) or change_sq
        when need_change is True."""
        self._usable()
        t, g = self._vec(theta, "SASG theta"), self._vec(grad, "SASG grad")
        update = np.empty(self.count, np.float32) if update is None else update
        u = self._vec(update, "SASG update", writeable=True)
        up = ctypes.c_int(0)
        if grad_stale is not None and not async_op:
            gs = self._vec(grad_stale, "SASG grad_stale")
            self._check(L.terse_sasg_step_grads(self._ptr, t.ptr, g.ptr, gs.ptr, u.ptr, ctypes.byref(up)),
                        "terse_sasg_step_grads")
            return update, bool(up.value)
        if grad_stale is not None:
            d = np.asarray(grad, np.float32) - np.asarray(grad_stale, np.float32)
            change_sq = float(np.dot(d.astype(np.float64), d.astype(np.float64)))
        cs = -1.0 if change_sq is None else float(change_sq)
        if not async_op:
            self._check(L.terse_sasg_step(self._ptr, t.ptr, g.ptr, cs, u.ptr, ctypes.byref(up)),
                        "terse_sasg_step")
            return update, bool(up.value)
        req = ctypes.c_void_p()
        self._check(L.terse_sasg_step_start(self._ptr, t.ptr, g.ptr, cs, u.ptr, ctypes.byref(up),
                                            ctypes.byref(req)), "terse_sasg_step_start")
        return Request(self.comm, req, (t, u, up, self), "terse_sasg_step", None,
                       finish=lambda: (update, bool(up.value)))

    def stats(self):
        s = _lib.SasgStats()
        self._check(L.terse_sasg_stats(self._ptr, ctypes.byref(s)), "terse_sasg_stats")
        return {n: getattr(s, n) for n, _ in _lib.SasgStats._fields_}


_POLICIES = {"all": 0, "quorum": 1, "deadline": 2, "solo": 3, "majority": 4}
_GC = {None: 0, "none": 0, "fractional": 1, "cyclic": 2}


class Partial(_Handle):
    """Straggler-tolerant allreduce of float32 vectors: each step completes
    with the contributions of the ranks the policy picks (all, quorum,
    deadline, solo, majority). Needs the progress thread (on by default)."""
    _destroy = L.terse_partial_destroy

    def __init__(self, comm, count, policy="all", quorum=None, deadline=None, min_contributors=None,
                 max_stale=None, fold_late=None, codec=None, bucket=None, error_feedback=None, op="sum",
                 gc=None, gc_s=None, seed=None, lookahead=None):
        super().__init__(comm, count, dict(policy=policy, quorum=quorum, deadline=deadline,
                                           min_contributors=min_contributors, max_stale=max_stale,
                                           fold_late=fold_late, codec=codec, bucket=bucket,
                                           error_feedback=error_feedback, op=op, gc=gc, gc_s=gc_s,
                                           seed=seed, lookahead=lookahead))
        p = _lib.PartialParams()
        L.terse_partial_params_init(ctypes.byref(p))
        if policy not in _POLICIES or gc not in _GC:
            raise ValueError("terse: policy must be one of %s, gc one of none, fractional, cyclic"
                             % ", ".join(_POLICIES))
        p.policy, p.gc, p.op = _POLICIES[policy], _GC[gc], op_code(op)
        given = dict(quorum=quorum, deadline_sec=deadline, min_contributors=min_contributors,
                     max_stale=max_stale, fold_late=fold_late, codec=_enc(codec), bucket=bucket,
                     error_feedback=error_feedback, gc_s=gc_s, seed=seed, lookahead=lookahead)
        for field, value in given.items():
            if value is not None:  # None keeps terse's default
                setattr(p, field, type(getattr(p, field))(value) if field != "codec" else value)
        ptr = ctypes.c_void_p()
        comm._check_usable()
        check(L.terse_partial_create(comm._ptr, self.count, ctypes.byref(p), ctypes.byref(ptr)),
              "terse_partial_create (TERSE_DEBUG=warn gives the reason)", comm._ptr)
        self._ptr = ptr

    def allreduce(self, x, out=None):
        """Returns (out, info): info has step, contributors, the set (a list of
        ranks), staleness, included, late, forced. x None contributes nothing."""
        self._usable()
        s = None if x is None else self._vec(x, "partial input")
        if out is None:
            out = empty_like(x, self.count) if x is not None else np.empty(self.count, np.float32)
        o = self._vec(out, "partial output", writeable=True)
        info = _lib.PartialInfo()
        self._check(L.terse_partial_allreduce(self._ptr, s.ptr if s else None, o.ptr, ctypes.byref(info)),
                    "terse_partial_allreduce")
        n = self.comm.size
        members = [r for r in range(n) if (info.set[r // 64] >> (r % 64)) & 1]
        return out, {"step": info.step, "contributors": info.contributors, "set": members,
                     "staleness": [info.staleness[r] for r in range(n)], "included": bool(info.included),
                     "late": bool(info.late), "forced": bool(info.forced), "bytes_sent": info.bytes_sent}

    def wait_decision(self, timeout):
        flag = ctypes.c_int(0)
        self._check(L.terse_partial_wait_decision(self._ptr, float(timeout), ctypes.byref(flag)),
                    "terse_partial_wait_decision")
        return bool(flag.value)

    @property
    def behind(self):
        return L.terse_partial_behind(self._ptr)


class GradientCode:
    """Tandon's gradient coding: which partitions a rank computes, and how."""

    def __init__(self, n, s, scheme="fractional", seed=0):
        if scheme not in ("fractional", "cyclic"):
            raise ValueError("terse: gradient coding scheme must be 'fractional' or 'cyclic'")
        self.n, self.s = int(n), int(s)
        self._ptr = ctypes.c_void_p()
        check(L.terse_gc_create(self.n, self.s, _GC[scheme], int(seed), ctypes.byref(self._ptr)),
              "terse_gc_create")

    def assignment(self, rank):
        """[(partition, coefficient)] for rank: c_rank = sum coeff * g_partition."""
        parts = (ctypes.c_int * (self.s + 1))()
        coeffs = (ctypes.c_double * (self.s + 1))()
        check(L.terse_gc_assignment(self._ptr, int(rank), parts, coeffs), "terse_gc_assignment")
        return list(zip(parts, coeffs))

    def __del__(self):
        if getattr(self, "_ptr", None):
            L.terse_gc_destroy(self._ptr)
            self._ptr = None


class AdaCons(_Handle):
    """AdaCons aggregation: G = sum alpha_i g_i / ||g_i|| instead of the mean."""
    _destroy = L.terse_adacons_destroy
    _state_fns = (L.terse_adacons_state_size, L.terse_adacons_save, L.terse_adacons_load)

    def __init__(self, comm, count, beta=0.99, eps=1e-8, rescale=False, codec_sum=None,
                 codec_combine=None, error_feedback=0, seed=0):
        super().__init__(comm, count, dict(beta=beta, eps=eps, rescale=rescale, codec_sum=codec_sum,
                                           codec_combine=codec_combine, error_feedback=error_feedback,
                                           seed=seed))
        p = _lib.AdaconsParams()
        L.terse_adacons_params_init(ctypes.byref(p))
        p.beta, p.eps, p.rescale = float(beta), float(eps), int(bool(rescale))
        p.codec_sum, p.codec_combine = _enc(codec_sum), _enc(codec_combine)
        p.error_feedback, p.seed = int(error_feedback), int(seed)
        ptr = ctypes.c_void_p()
        comm._check_usable()
        check(L.terse_adacons_create(comm._ptr, self.count, ctypes.byref(p), ctypes.byref(ptr)),
              "terse_adacons_create", comm._ptr)
        self._ptr = ptr

    def step(self, g, out=None, async_op=False):
        self._usable()
        s = self._vec(g, "AdaCons gradient")
        o = s if out is None else self._vec(out, "AdaCons output", writeable=True)
        if not async_op:
            self._check(L.terse_adacons_step(self._ptr, s.ptr, o.ptr), "terse_adacons_step")
            return o.obj
        req = ctypes.c_void_p()
        self._check(L.terse_adacons_step_start(self._ptr, s.ptr, o.ptr, ctypes.byref(req)),
                    "terse_adacons_step_start")
        return Request(self.comm, req, (s, o, self), "terse_adacons_step", o.obj)

    def stats(self):
        s = _lib.AdaconsStats()
        self._check(L.terse_adacons_stats(self._ptr, ctypes.byref(s)), "terse_adacons_stats")
        n = self.comm.size
        return {"steps": s.steps, "fallbacks": s.fallbacks, "fallback": bool(s.fallback),
                "mean_norm": s.mean_norm,
                "coef": [s.coef[i] for i in range(n)] if s.coef else None,
                "alpha": [s.alpha[i] for i in range(n)] if s.alpha else None}
