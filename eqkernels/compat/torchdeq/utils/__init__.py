"""torchdeq.utils: add_deq_args, mem_gc, mixed_init (and the submodules arg_utils, config,
init, mem, layer_utils)."""
from eqkernels.compat.torchdeq.utils.arg_utils import add_deq_args
from eqkernels.compat.torchdeq.utils.init import mixed_init
from eqkernels.compat.torchdeq.utils.mem import mem_gc

__all__ = ["add_deq_args", "mem_gc", "mixed_init"]
