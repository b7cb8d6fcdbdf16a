"""The shared library and its C declarations (ctypes; nothing to compile).

Found, in this order: $TERSE_LIBRARY (a path), the build tree this package
sits in (../lib/.libs after `make`), then the dynamic loader's search path
(`make install`: libterse.so.1 in the system's library folder).
"""
import ctypes
import ctypes.util
import os

# Fork: libterse's verbs transport asks rdma-core for fork support before
# its first registration where the kernel needs it (ibv_fork_init); setting
# RDMAV_FORK_SAFE here would force MADV_DONTFORK even on kernels that copy
# pinned pages at fork, and cost forked children (DataLoader workers) pages.
from ctypes import (POINTER, Structure, c_char_p, c_double, c_int, c_size_t, c_uint32, c_uint64,
                    c_void_p)


def _candidates():
    env = os.environ.get("TERSE_LIBRARY")
    if env:
        yield env
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "..", "..", "lib", ".libs", "libterse.so.1")
    yield "libterse.so.1"
    found = ctypes.util.find_library("terse")
    if found:
        yield found


def _load():
    errors = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            errors.append("%s: %s" % (path, e))
    raise ImportError("terse: cannot load libterse (build it with scripts/build.sh, install it with "
                      "`make install`, or point TERSE_LIBRARY at libterse.so.1); tried: " +
                      "; ".join(errors or ["nothing found"]))


lib, path = _load()

OOB_ALLGATHER = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t, c_void_p, POINTER(c_void_p))
OOB_REQ = ctypes.CFUNCTYPE(c_int, c_void_p)


class OobColl(Structure):
    _fields_ = [("allgather", OOB_ALLGATHER), ("req_test", OOB_REQ), ("req_free", OOB_REQ),
                ("coll_info", c_void_p), ("n_oob_eps", c_int), ("oob_ep", c_int)]


class CommParams(Structure):
    _fields_ = [("struct_size", c_size_t), ("rank", c_int), ("size", c_int), ("root_addr", c_char_p),
                ("secret", c_char_p), ("transport", c_char_p), ("timeout_sec", c_double),
                ("oob", OobColl), ("host_id", c_char_p), ("boot_timeout_sec", c_double),
                ("progress_thread", c_int)]


class CommStats(Structure):
    _fields_ = [(n, c_uint64) for n in ("calls", "bytes_sent", "chunks_placed", "chunks_slotted",
                                        "reg_created", "reg_hits", "reg_misses", "connections",
                                        "pinned_bytes", "parked_bytes")]


class CompressedParams(Structure):
    _fields_ = [("struct_size", c_size_t), ("codec", c_char_p), ("server_codec", c_char_p),
                ("ratio", c_double), ("levels", c_int), ("norm", c_int), ("bucket", c_size_t),
                ("error_feedback", c_int), ("server_error_feedback", c_int),
                ("error_average_every", c_int), ("op", c_int), ("algo", c_int), ("seed", c_uint64)]


class CompressedStats(Structure):
    _fields_ = [("steps", c_uint64), ("error_averages", c_uint64), ("bytes_sent", c_uint64),
                ("bytes_sent_total", c_uint64), ("dense_bytes", c_uint64), ("ratio", c_double),
                ("residual_norm", c_double), ("server_residual_norm", c_double),
                ("algorithm", c_char_p), ("codec", c_char_p)]


class SparseParams(Structure):
    _fields_ = [("struct_size", c_size_t), ("values", c_int), ("dense_switch", c_int),
                ("seed", c_uint64)]


class SparseList(Structure):
    _fields_ = [("total", c_size_t), ("counts", POINTER(c_size_t)), ("offsets", POINTER(c_size_t)),
                ("idx", POINTER(c_uint32)), ("val", POINTER(ctypes.c_float))]


class SparseStats(Structure):
    _fields_ = [("calls", c_uint64), ("bytes_sent", c_uint64), ("dense_sends", c_uint64)]


class SasgParams(Structure):
    _fields_ = [("struct_size", c_size_t), ("ratio", c_double), ("D", c_int), ("lr", c_double),
                ("c", c_double), ("sampled_topk", c_int), ("values", c_int), ("ntensors", c_int),
                ("offsets", POINTER(c_size_t))]


class SasgStats(Structure):
    _fields_ = [("steps", c_uint64), ("uploads", c_uint64), ("skips", c_uint64),
                ("bytes_sent", c_uint64)]


class PartialParams(Structure):
    _fields_ = [("struct_size", c_size_t), ("policy", c_int), ("quorum", c_int),
                ("deadline_sec", c_double), ("min_contributors", c_int), ("max_stale", c_int),
                ("fold_late", c_int), ("codec", c_char_p), ("bucket", c_size_t),
                ("error_feedback", c_int), ("op", c_int), ("gc", c_int), ("gc_s", c_int),
                ("seed", c_uint64), ("lookahead", c_int)]


class PartialInfo(Structure):
    _fields_ = [("step", c_uint64), ("contributors", c_int), ("set", POINTER(c_uint64)),
                ("staleness", POINTER(c_uint32)), ("included", c_int), ("late", c_int),
                ("forced", c_int), ("bytes_sent", c_uint64)]


class AdaconsParams(Structure):
    _fields_ = [("struct_size", c_size_t), ("beta", c_double), ("eps", c_double), ("rescale", c_int),
                ("codec_sum", c_char_p), ("codec_combine", c_char_p), ("error_feedback", c_int),
                ("seed", c_uint64)]


class AdaconsStats(Structure):
    _fields_ = [("steps", c_uint64), ("fallbacks", c_uint64), ("fallback", c_int),
                ("mean_norm", c_double), ("coef", POINTER(c_double)), ("alpha", POINTER(c_double))]


class EbInfo(Structure):
    _fields_ = [("bound", c_double), ("step", c_double), ("max_error", c_double), ("ratio", c_double),
                ("bytes_sent", c_size_t)]


P = c_void_p   # an opaque handle or a buffer address
S = c_int      # terse_status_t
PP = POINTER(c_void_p)
SZ = c_size_t
SZP = POINTER(c_size_t)
FP = c_void_p  # float * (passed as an address)

# name: (restype, argtypes)
_DECLS = {
    "terse_strerror": (c_char_p, [c_int]),
    "terse_version": (c_char_p, []),
    "terse_comm_params_init": (None, [POINTER(CommParams)]),
    "terse_comm_create": (S, [POINTER(CommParams), PP]),
    "terse_comm_destroy": (S, [P]),
    "terse_comm_rank": (c_int, [P]),
    "terse_comm_size": (c_int, [P]),
    "terse_comm_split": (S, [P, c_int, c_int, PP]),
    "terse_comm_dup": (S, [P, PP]),
    "terse_comm_create_group": (S, [P, c_int, POINTER(c_int), PP]),
    "terse_comm_split_type": (S, [P, c_int, c_int, PP]),
    "terse_comm_local_rank": (c_int, [P]),
    "terse_comm_local_size": (c_int, [P]),
    "terse_comm_node_count": (c_int, [P]),
    "terse_comm_shrink": (S, [P, PP]),
    "terse_comm_transport": (c_char_p, [P]),
    "terse_comm_error": (S, [P, POINTER(c_char_p)]),
    "terse_comm_stats": (S, [P, POINTER(CommStats)]),
    "terse_allreduce": (S, [P, P, P, SZ, c_int, c_int]),
    "terse_allreduce_start": (S, [P, P, P, SZ, c_int, c_int, PP]),
    "terse_allreduce_init": (S, [P, P, P, SZ, c_int, c_int, PP]),
    "terse_reduce_scatter": (S, [P, P, P, SZ, c_int, c_int]),
    "terse_reduce_scatter_start": (S, [P, P, P, SZ, c_int, c_int, PP]),
    "terse_allgather": (S, [P, P, P, SZ, c_int]),
    "terse_allgather_start": (S, [P, P, P, SZ, c_int, PP]),
    "terse_allgatherv": (S, [P, P, SZ, P, SZP, SZP, c_int]),
    "terse_broadcast": (S, [P, P, P, SZ, c_int, c_int]),
    "terse_broadcast_start": (S, [P, P, P, SZ, c_int, c_int, PP]),
    "terse_reduce": (S, [P, P, P, SZ, c_int, c_int, c_int]),
    "terse_reduce_start": (S, [P, P, P, SZ, c_int, c_int, c_int, PP]),
    "terse_alltoall": (S, [P, P, P, SZ, c_int]),
    "terse_alltoall_start": (S, [P, P, P, SZ, c_int, PP]),
    "terse_alltoallv": (S, [P, P, SZP, SZP, P, SZP, SZP, c_int]),
    "terse_alltoallv_start": (S, [P, P, SZP, SZP, P, SZP, SZP, c_int, PP]),
    "terse_barrier": (S, [P]),
    "terse_mem_register": (S, [P, P, SZ, PP]),
    "terse_mem_deregister": (S, [P, P]),
    "terse_start": (S, [P]),
    "terse_request_test": (S, [P, POINTER(c_int)]),
    "terse_request_wait": (S, [P]),
    "terse_request_free": (S, [P]),
    "terse_compressed_params_init": (None, [POINTER(CompressedParams)]),
    "terse_compressed_create": (S, [P, SZ, POINTER(CompressedParams), PP]),
    "terse_compressed_destroy": (None, [P]),
    "terse_compressed_allreduce": (S, [P, FP, FP]),
    "terse_compressed_allreduce_start": (S, [P, FP, FP, PP]),
    "terse_compressed_step_ahead": (S, [P, FP, FP]),
    "terse_compressed_scale_residual": (S, [P, ctypes.c_float]),
    "terse_compressed_residual": (S, [P, FP]),
    "terse_compressed_stats": (S, [P, POINTER(CompressedStats)]),
    "terse_compressed_state_size": (SZ, [P]),
    "terse_compressed_save": (S, [P, P, SZ]),
    "terse_compressed_load": (S, [P, P, SZ]),
    "terse_sparse_params_init": (None, [POINTER(SparseParams)]),
    "terse_sparse_create": (S, [P, SZ, POINTER(SparseParams), PP]),
    "terse_sparse_destroy": (None, [P]),
    "terse_sparse_allgather": (S, [P, P, FP, SZ, POINTER(SparseList)]),
    "terse_sparse_allgather_start": (S, [P, P, FP, SZ, POINTER(SparseList), PP]),
    "terse_sparse_allreduce": (S, [P, P, FP, SZ, FP]),
    "terse_sparse_allreduce_start": (S, [P, P, FP, SZ, FP, PP]),
    "terse_sparse_stats": (S, [P, POINTER(SparseStats)]),
    "terse_topk_select": (S, [FP, SZ, SZ, c_int, P]),
    "terse_sasg_params_init": (None, [POINTER(SasgParams)]),
    "terse_sasg_create": (S, [P, SZ, POINTER(SasgParams), PP]),
    "terse_sasg_destroy": (None, [P]),
    "terse_sasg_need_change": (c_int, [P]),
    "terse_sasg_stale_point": (P, [P]),
    "terse_sasg_threshold": (c_double, [P]),
    "terse_sasg_set_lr": (S, [P, c_double]),
    "terse_sasg_step": (S, [P, FP, FP, c_double, FP, POINTER(c_int)]),
    "terse_sasg_step_start": (S, [P, FP, FP, c_double, FP, POINTER(c_int), PP]),
    "terse_sasg_step_grads": (S, [P, FP, FP, FP, FP, POINTER(c_int)]),
    "terse_sasg_stats": (S, [P, POINTER(SasgStats)]),
    "terse_sasg_state_size": (SZ, [P]),
    "terse_sasg_save": (S, [P, P, SZ]),
    "terse_sasg_load": (S, [P, P, SZ]),
    "terse_partial_params_init": (None, [POINTER(PartialParams)]),
    "terse_partial_create": (S, [P, SZ, POINTER(PartialParams), PP]),
    "terse_partial_destroy": (None, [P]),
    "terse_partial_allreduce": (S, [P, FP, FP, POINTER(PartialInfo)]),
    "terse_partial_wait_decision": (S, [P, c_double, POINTER(c_int)]),
    "terse_partial_behind": (c_int, [P]),
    "terse_partial_residual": (S, [P, FP]),
    "terse_gc_create": (S, [c_int, c_int, c_int, c_uint64, PP]),
    "terse_gc_destroy": (None, [P]),
    "terse_gc_assignment": (S, [P, c_int, POINTER(c_int), POINTER(c_double)]),
    "terse_adacons_params_init": (None, [POINTER(AdaconsParams)]),
    "terse_adacons_create": (S, [P, SZ, POINTER(AdaconsParams), PP]),
    "terse_adacons_destroy": (None, [P]),
    "terse_adacons_step": (S, [P, FP, FP]),
    "terse_adacons_step_start": (S, [P, FP, FP, PP]),
    "terse_adacons_stats": (S, [P, POINTER(AdaconsStats)]),
    "terse_adacons_state_size": (SZ, [P]),
    "terse_adacons_save": (S, [P, P, SZ]),
    "terse_adacons_load": (S, [P, P, SZ]),
    "terse_eb_allreduce": (S, [P, P, P, SZ, c_int, c_int, c_double, POINTER(EbInfo)]),
}

for _name, (_res, _args) in _DECLS.items():
    _f = getattr(lib, _name)
    _f.restype = _res
    _f.argtypes = _args
