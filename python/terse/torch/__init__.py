"""terse for PyTorch: DDP communication hooks with the compression state in
terse (terse.torch.hooks) and the "terse" ProcessGroup backend, registered
on import:

    import terse.torch
    torch.distributed.init_process_group("terse")     # an unmodified DDP script
    state = terse.torch.hooks.cnat_state()
    ddp.register_comm_hook(state, terse.torch.hooks.compressed_hook)
"""
from . import backend, hooks
from .backend import ProcessGroupTerse
from .hooks import (CompressedState, SASGState, StepAhead, allreduce_hook, cnat_state, comm_for,
                    compressed_hook, natdither_state, sasg_hook, sign_ef_state, topk_ef_state)

backend.register()

__all__ = ["ProcessGroupTerse", "CompressedState", "SASGState", "StepAhead", "allreduce_hook",
           "cnat_state", "comm_for", "compressed_hook", "natdither_state", "sasg_hook",
           "sign_ef_state", "topk_ef_state", "hooks", "backend"]
