"""StopOnSignal: Ctrl-C (SIGINT) or SIGTERM asks a training loop to stop at its next step
boundary, where it saves a checkpoint, instead of killing it mid-step.

    with StopOnSignal() as stop:
        for batch in ...:
            train(batch)
            if stop.agreed(device):          # every rank, once per step boundary
                save(); sys.exit(stop.exit_code)

The handler only records the signal: Python runs it between bytecodes of the main thread, so
nothing is torn. Later signals are noted and ignored, because torchrun forwards the signal it
gets to workers that already got it from the terminal (and SIGKILLs them 30 s later): the
save must survive the second copy. Ctrl-\\ (SIGQUIT) still quits at once, without saving.

Under torch.distributed, `agreed` all-reduces the flag (MAX) so every rank stops after the same
step even when only one got the signal (kill -INT to one process): one tiny collective per call,
which under DDP sits beside the gradient all-reduce each step already makes.
Exit codes follow the shell's 128 + signal number: 130 for SIGINT, 143 for SIGTERM.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignal:
    def __init__(self, signals=SIGNALS, message: str = "stopping at the end of this step to "
                                                      "save a checkpoint"):
        self.signals, self.message = tuple(signals), message
        self.signum: Optional[int] = None
        self._previous = {}

    # ---- the handler ---------------------------------------------------------------
    def __enter__(self) -> "StopOnSignal":
        # Python sets handlers in the main thread only; elsewhere signals keep their handlers.
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            _say(f"\n{name}: {self.message}\n")
        else:
            _say(f"\n{name}: already stopping (Ctrl-\\ quits at once, without saving)\n")

    # ---- the decision --------------------------------------------------------------
    @property
    def requested(self) -> bool:
        """This process got a signal (no communication)."""
        return self.signum is not None

    def agreed(self, device=None) -> bool:
        """Whether any rank got a signal: all ranks get the same answer (a collective, so every
        rank must call it at the same step). Without torch.distributed: `requested`."""
        world = _world()
        if world is None:
            return self.requested
        import torch
        import torch.distributed as dist
        flag = torch.tensor([self.signum or 0], dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        agreed = int(flag.item())  # the host needs the answer to leave its loop
        if agreed:
            self.signum = agreed  # one signal for all ranks: the same exit code everywhere
        return bool(agreed)

    @property
    def signal_name(self) -> Optional[str]:
        return signal.Signals(self.signum).name if self.signum else None

    @property
    def exit_code(self) -> int:
        """128 + the signal number (130 for SIGINT, 143 for SIGTERM); 0 without a signal."""
        return 128 + self.signum if self.signum else 0


def _say(text: str) -> None:
    """A raw write to fd 2: print() inside a handler can re-enter a stderr write the main
    thread was making (tqdm) and raise "reentrant call"."""
    try:
        os.write(2, text.encode())
    except OSError:
        pass


def _world() -> Optional[int]:
    """The world size under an initialised torch.distributed with more than one rank."""
    if "torch.distributed" not in sys.modules:
        return None
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_world_size()
    return None
