"""Test-session setup: Triton runs under its interpreter on CPU-only machines (CI)."""
import os

import torch

if not torch.cuda.is_available():
    # Must be set before triton is first imported anywhere in the session.
    os.environ.setdefault("TRITON_INTERPRET", "1")
