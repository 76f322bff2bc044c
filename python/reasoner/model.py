"""The equilibrium reasoner: EqR's model (locuslab/EqR, models/eqr.py), on eqkernels' update,
for any task of fixed-length token sequences (Sudoku, mazes).

The recipe, as EqR's `InnerNetwork` computes it:
  x = embed(tokens) * sqrt(hidden); latents z_H, z_L: (B, seq_len, hidden).
  One update of a latent z with injection u:
      z <- (1 - damping) z + damping * blocks(z + u) + noise_std * eps
  run by `eqk.LoopedUpdate`: fused and in place at inference; in training the same fused
  update gives the value and autograd records the linear part's gradient (one counter-based
  noise stream for both).
  One round = L_cycles updates of z_L with u = z_H + x, then one update of z_H with u = z_L.
  One reasoning step = H_cycles rounds. Outputs: lm_head(z_H) per token, and the halting
  head on z_H's first token (logit 0 = "halt").
  blocks = `layers` post-norm layers, token mixing then a channel MLP:
      token MLP (EqR's mlp_t: true, its Sudoku model): seen as (B, hidden, seq_len),
                    h <- rms_norm(h + SwiGLU_seq_len(h)) with the norm over the TOKENS,
                    i.e. over dim 1 of (B, seq_len, hidden) (eqk.nn.LoopedTransformerStack);
      attention (mlp_t: false, its Maze model; cfg.attention): h <- rms_norm(h + attn(h))
                    over hidden, multi-head self-attention with RoPE over the tokens
                    (pos_encoding "rope"), a height x width board ("rope2d") or none
                    (eqk.nn.LoopedAttentionStack);
      channel MLP:  h <- rms_norm(h + SwiGLU_hidden(h)) over hidden.
  rms_norm: no learned scale, eps 1e-5, computed in float32 (float64 for float64 latents).
seq_len and vocab are the task's (EqR takes them from its dataset's dataset.json), as is
the board of "rope2d" (default: a square of seq_len cells, EqR's rule).
Precision (`latent_dtype`): z_H, z_L, x and every block run in that dtype, the weights cast
to it once per forward (EqR's `forward_dtype`: bfloat16 keeps the latents in bf16; the RoPE
rotation runs in float32, as EqR's).
Starts: EqR's compensated truncated normal (std exactly H_init_std / L_init_std, clipped at
+-2 comp_std), or, for TRM-style checkpoints (`fixed_init`), the learned H_init / L_init
vectors broadcast to every token.
Before checkpoint format 2 our token-mixing norm ran over hidden (`mlp_t_norm="hidden"`): a
different model, kept only to run checkpoints trained with it (reasoner.checkpoint flags them).
Kernels (`Reasoner(cfg, kernels=...)`, or `model.kernels = ...` after loading), for every
update autograd does not record:
  "eager"    the block in plain PyTorch, the update fused (eqk.LoopedUpdate);
  "fused"    the block and the update as eqkernels' fused ops (Triton on CUDA, their
             reference ops on CPU); the token-MLP model only;
  "compile"  one reasoning step under torch.compile(fullgraph=True), update op inside;
  "auto"     the fastest path on the device: eager on CPU; on CUDA, the token-MLP model
             fused where Triton runs and the dtype has fused kernels, else compile where
             Triton runs, else eager; the attention model compile where Triton runs
             (inductor around SDPA's flash kernel), else eager.
Recorded updates (training) always run the plain-PyTorch block under autograd. The
mlp_t_norm="hidden" variant runs eager only ("auto" does; "fused"/"compile" are refused).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

import eqkernels as eqk
from eqkernels.nn import (LoopedAttentionStack, LoopedTransformerStack, SwiGLU, rms_norm,
                         swiglu_inner_width)  # noqa: F401
from eqkernels.solvers import SegmentRunner

LATENT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}
MLP_T_NORMS = ("token", "hidden")
POS_ENCODINGS = ("none", "rope", "rope2d")
KERNELS = ("auto", "fused", "compile", "eager")
FUSED_DTYPES = (torch.float32, torch.bfloat16)  # the block ops' Triton dtypes (float64: references)


@dataclass
class ReasonerConfig:
    """The model's options. seq_len and vocab come from the task (its data); the other
    defaults are EqR's config/arch/eqr.yaml (its Sudoku recipe)."""
    seq_len: int                     # tokens per example (81 Sudoku cells, H * W maze cells)
    vocab: int                       # token ids in [0, vocab)
    hidden: int = 512
    layers: int = 2
    expansion: float = 4.0
    H_cycles: int = 3
    L_cycles: int = 6
    damping: float = 0.95            # EqR's lambda_
    noise_std: float = 0.01          # EqR's noise_scale
    rms_eps: float = 1e-5
    attention: bool = False          # token mixing by self-attention (EqR's mlp_t: false)
    heads: int = 8
    pos_encoding: str = "none"       # attention's positions: none, rope (1-D), rope2d (board)
    rope_base: float = 10000.0       # EqR's rope_theta
    board: Optional[Tuple[int, int]] = None  # rope2d's (height, width); None: a square
    H_init_std: float = 1.0          # random starts' std of z_H / z_L (EqR's H/L_init_std)
    L_init_std: float = 1.0
    latent_dtype: str = "float32"    # float32, bfloat16 (EqR's forward_dtype) or float64
    fixed_init: bool = False         # TRM: learned H_init / L_init buffers as the starts
    mlp_t_norm: str = "token"        # "hidden": the pre-format-2 layer (old checkpoints only)

    def __post_init__(self):
        if self.latent_dtype not in LATENT_DTYPES:
            raise ValueError(f"latent_dtype must be one of {sorted(LATENT_DTYPES)}, got "
                             f"{self.latent_dtype!r}")
        if self.mlp_t_norm not in MLP_T_NORMS:
            raise ValueError(f"mlp_t_norm must be one of {MLP_T_NORMS}, got {self.mlp_t_norm!r}")
        for name in ("hidden", "layers", "H_cycles", "L_cycles", "vocab", "seq_len", "heads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not 0 < self.damping <= 1:
            raise ValueError(f"damping must be in (0, 1], got {self.damping!r}")
        if self.noise_std < 0 or self.H_init_std < 0 or self.L_init_std < 0:
            raise ValueError("noise_std, H_init_std and L_init_std must be >= 0")
        if self.pos_encoding not in POS_ENCODINGS:
            raise ValueError(f"pos_encoding must be one of {POS_ENCODINGS}, got "
                             f"{self.pos_encoding!r}")
        if self.pos_encoding != "none" and not self.attention:
            raise ValueError(f"pos_encoding {self.pos_encoding!r} needs attention token mixing "
                             f"(the token MLP has no positions)")
        if self.attention:
            if self.hidden % self.heads:
                raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
            if self.mlp_t_norm != "token":
                raise ValueError("mlp_t_norm applies to the token MLP, not to attention")
        if self.board is not None:
            board = tuple(self.board)
            if len(board) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                          for v in board):
                raise ValueError(f"board must be (height, width), ints >= 1, got {self.board!r}")
            if board[0] * board[1] != self.seq_len:
                raise ValueError(f"board {board[0]}x{board[1]} has {board[0] * board[1]} cells, "
                                 f"seq_len is {self.seq_len}")
            self.board = board
        if self.pos_encoding == "rope2d":
            self.board = self.rope_board
            if (self.hidden // self.heads) % 4:
                raise ValueError(f"pos_encoding 'rope2d' needs hidden / heads divisible by 4, got "
                                 f"{self.hidden} / {self.heads}")

    @property
    def rope_board(self) -> Tuple[int, int]:
        """rope2d's (height, width): `board`, else a square of seq_len cells (EqR's rule)."""
        if self.board is not None:
            return tuple(self.board)
        side = math.isqrt(self.seq_len)
        if side * side != self.seq_len:
            raise ValueError(f"pos_encoding 'rope2d' needs board=(height, width): seq_len "
                             f"{self.seq_len} is not a square")
        return side, side

    @property
    def dtype(self) -> torch.dtype:
        return LATENT_DTYPES[self.latent_dtype]

    def to_dict(self) -> dict:
        return asdict(self)


def truncated_normal_(t: torch.Tensor, std: float, generator=None) -> torch.Tensor:
    """Fill t with a normal truncated at +-2 comp_std whose std is exactly `std`.

    A standard normal cut to [-2, 2] has variance 1 - 2*2*phi(2) / (Phi(2) - Phi(-2))
    (about 0.774); comp_std = std / sqrt(that), so the cut sample has std `std`. Drawn by
    inverting the CDF on uniforms (EqR's and JAX's compensated truncated normal).
    """
    if std == 0:
        return t.zero_()
    lo, hi = -2.0, 2.0
    a, b = math.erf(lo / math.sqrt(2)), math.erf(hi / math.sqrt(2))
    mass = (b - a) / 2                                   # Phi(hi) - Phi(lo)
    pdf = lambda v: math.exp(-v * v / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    var = 1 + (lo * pdf(lo) - hi * pdf(hi)) / mass - ((pdf(lo) - pdf(hi)) / mass) ** 2
    comp = std / math.sqrt(var)
    with torch.no_grad():
        u = torch.empty(t.shape, dtype=torch.float64 if t.dtype == torch.float64 else torch.float32,
                        device=t.device)
        u.uniform_(a, b, generator=generator).erfinv_().mul_(math.sqrt(2) * comp)
        t.copy_(u.clamp_(lo * comp, hi * comp))
    return t


def _swiglu(x, w_gate_up, w_down):
    """SwiGLU over the last axis of x (the legacy layers' eager math)."""
    gate, up = F.linear(x, w_gate_up).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, w_down)


class LegacyReasonerLayer(nn.Module):
    """The pre-format-2 layer, eager only: the token MLP normalised over hidden (mlp_t_norm
    "hidden"), then h <- norm(h + SwiGLU over hidden). EqR's own layers are
    eqk.nn.LoopedTransformerLayer and eqk.nn.LoopedAttentionLayer."""

    def __init__(self, cfg: ReasonerConfig):
        super().__init__()
        self.eps = cfg.rms_eps
        self.mlp_t = SwiGLU(cfg.seq_len, cfg.expansion)  # mixes the tokens, per channel
        self.mlp = SwiGLU(cfg.hidden, cfg.expansion)

    def weights(self, dtype) -> tuple:
        """This layer's matrices in `dtype` (cast once, reused by every update of a forward)."""
        mats = [self.mlp_t.gate_up_proj.weight, self.mlp_t.down_proj.weight,
                self.mlp.gate_up_proj.weight, self.mlp.down_proj.weight]
        return tuple(w if w.dtype == dtype else w.to(dtype) for w in mats)

    def apply(self, h, w):
        h = rms_norm(h + _swiglu(h.transpose(1, 2), w[0], w[1]).transpose(1, 2), self.eps)
        return rms_norm(h + _swiglu(h, w[2], w[3]), self.eps)


class LegacyReasonerStack(nn.Module):
    """`layers` LegacyReasonerLayers, with LoopedTransformerStack's weights / apply / forward."""

    def __init__(self, cfg: ReasonerConfig):
        super().__init__()
        self.layers = nn.ModuleList(LegacyReasonerLayer(cfg) for _ in range(cfg.layers))

    def weights(self, dtype) -> List[tuple]:
        return [layer.weights(dtype) for layer in self.layers]

    def apply(self, h, weights):
        for layer, w in zip(self.layers, weights):
            h = layer.apply(h, w)
        return h

    def forward(self, h):
        return self.apply(h, self.weights(h.dtype))


def reasoner_stack(cfg: ReasonerConfig) -> nn.Module:
    """The block of `cfg`: eqk.nn.LoopedTransformerStack (EqR's token-MLP layer),
    eqk.nn.LoopedAttentionStack (its attention layer), or the legacy mlp_t_norm="hidden" stack.
    Parameter names: layers.{i}.mlp_t.* or layers.{i}.attn.*, then layers.{i}.mlp.*, as in
    checkpoints."""
    if cfg.attention:
        return LoopedAttentionStack(cfg.layers, cfg.hidden, cfg.heads, cfg.expansion, cfg.rms_eps,
                                    pos_encoding=cfg.pos_encoding, seq_len=cfg.seq_len,
                                    board=cfg.board if cfg.pos_encoding == "rope2d" else None,
                                    rope_base=cfg.rope_base)
    if cfg.mlp_t_norm != "token":
        return LegacyReasonerStack(cfg)
    return LoopedTransformerStack(cfg.layers, cfg.seq_len, cfg.hidden, cfg.expansion, cfg.rms_eps)


class Reasoner(nn.Module):
    """`logits, q_logits, carry = model(tokens, carry=None, steps=1)`.

    tokens: (B, seq_len) int64 in [0, vocab). carry: (z_H, z_L) from a previous call, or None for
    fresh starts. steps: reasoning steps (H_cycles rounds each). Returns logits (B, seq_len, vocab)
    and halting logits (B, 2) (index 0 is EqR's q_halt), float32, and the new carry (detached,
    in cfg.latent_dtype).
    grad: "none" (inference: every update fused and in place), "last" (EqR's: the whole last
    round recorded by autograd, all L_cycles z_L updates and the z_H update), an int k >= 1
    (the last k rounds recorded), or "one_step" (only the last z_L update and the z_H update).
    seed: the noise stream's seed (None: drawn from torch's RNG). update: an existing
    eqk.LoopedUpdate to continue (its seed and step counter), e.g. across calls of a run
    (pass one when the whole forward runs under torch.compile: creating it is host work).
    kernels: the path of the unrecorded updates, "auto" | "fused" | "compile" | "eager" (see
    the module docstring); settable after construction (`model.kernels = "eager"`).
    backend: the op backend ("auto" or a name from eqk.backends()) of every update and of the
    fused path's block ops, e.g. "triton" to run the Triton kernels interpreted on a CPU
    (TRITON_INTERPRET=1); a plain attribute.
    """

    def __init__(self, cfg: ReasonerConfig, kernels: str = "auto"):
        super().__init__()
        if not isinstance(cfg, ReasonerConfig):
            raise TypeError(f"cfg must be a ReasonerConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.hidden)
        nn.init.normal_(self.embed_tokens.weight, std=1.0 / math.sqrt(cfg.hidden))
        self.L_level = reasoner_stack(cfg)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)
        self.q_head = nn.Linear(cfg.hidden, 2, bias=True)
        with torch.no_grad():  # EqR's halting head starts at "never halt"
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5)
        if cfg.fixed_init:
            self.register_buffer("H_init", truncated_normal_(torch.empty(cfg.hidden), 1.0))
            self.register_buffer("L_init", truncated_normal_(torch.empty(cfg.hidden), 1.0))
        self.kernels = kernels
        self.backend = "auto"

    # ---- kernels ------------------------------------------------------------------------
    @property
    def kernels(self) -> str:
        """The requested kernel path: "auto", "fused", "compile" or "eager"."""
        return self._kernels

    @kernels.setter
    def kernels(self, value: str) -> None:
        if value not in KERNELS:
            raise ValueError(f"kernels must be one of {KERNELS}, got {value!r}")
        why = self.unavailable(value)
        if why:
            raise ValueError(f"kernels={value!r} is not available: {why}; use "
                             f"{'compile, ' if value == 'fused' and self.cfg.attention else ''}"
                             f"'eager' or 'auto'")
        self._kernels = value

    def unavailable(self, kernels: str) -> str:
        """Why this model variant cannot run `kernels` ('' when it can)."""
        if kernels == "fused" and self.cfg.attention:
            return ("the attention token-mixing model has no fused block (its attention is "
                    "SDPA's kernel; 'compile' fuses the rest around it)")
        return self.eager_only() if kernels in ("fused", "compile") else ""

    def eager_only(self) -> str:
        """Why this model variant runs the eager path only ('' when it has the others)."""
        if self.cfg.mlp_t_norm != "token":
            return ("the legacy mlp_t_norm='hidden' layer (format-1 checkpoints) has no fused "
                    "or compiled block")
        return ""

    def kernel_path(self, device=None) -> Tuple[str, str]:
        """(path, reason): the path ("fused", "compile" or "eager") the unrecorded updates take
        on `device` (default: the parameters' device), and why."""
        device = torch.device(device) if device is not None else self.lm_head.weight.device
        if self._kernels != "auto":
            return self._kernels, "requested"
        why = self.eager_only()
        if why:
            return "eager", why
        if device.type != "cuda":
            return "eager", f"auto on {device.type}: the plain-PyTorch block is the fastest there"
        if torch.compiler.is_compiling():  # the caller compiles the forward: it fuses the block
            return "eager", "auto inside torch.compile"
        triton_ok, triton_why = eqk.backends()["triton"]
        if not triton_ok:
            return "eager", f"auto on cuda without Triton ({triton_why})"
        if self.cfg.attention:
            return "compile", "auto on cuda: the attention model compiled (SDPA's kernel inside)"
        if self.cfg.dtype in FUSED_DTYPES:
            return "fused", "auto on cuda: fused Triton block"
        return "compile", f"auto on cuda: no fused block for {self.cfg.latent_dtype}"

    # ---- pieces -----------------------------------------------------------------------
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, seq_len) tokens -> x: (B, seq_len, hidden) in the latent dtype.

        Out-of-range tokens raise ValueError (a host-side check); inside a torch.compile'd
        region the check is a device-side assert instead, so the graph never syncs."""
        if tokens.dim() != 2 or tokens.shape[1] != self.cfg.seq_len:
            raise ValueError(f"tokens must be (B, {self.cfg.seq_len}), got {tuple(tokens.shape)}")
        if tokens.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"tokens must be integer, got {tokens.dtype}")
        in_range = f"tokens must lie in [0, {self.cfg.vocab})"
        if torch.compiler.is_compiling():
            torch._assert_async(((tokens >= 0) & (tokens < self.cfg.vocab)).all(), in_range)
        elif tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.cfg.vocab):
            raise ValueError(in_range)
        table = self.embed_tokens.weight.to(self.cfg.dtype)
        return F.embedding(tokens, table) * math.sqrt(self.cfg.hidden)

    def initial_carry(self, batch: int, device=None, generator=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Starts (z_H, z_L), each (batch, seq_len, hidden) in the latent dtype: EqR's truncated
        normal (std H_init_std / L_init_std), or the fixed H_init / L_init of a TRM model."""
        cfg = self.cfg
        shape = (batch, cfg.seq_len, cfg.hidden)
        if cfg.fixed_init:
            return tuple(v.to(device=device or v.device, dtype=cfg.dtype).expand(shape).clone()
                         for v in (self.H_init, self.L_init))
        z = torch.empty((2,) + shape, dtype=cfg.dtype, device=device)
        truncated_normal_(z[0], cfg.H_init_std, generator)
        truncated_normal_(z[1], cfg.L_init_std, generator)
        return z[0].clone(), z[1].clone()

    def heads(self, z_H: torch.Tensor):
        """(logits (B, seq_len, vocab), q_logits (B, 2)), float32, computed in z_H's dtype."""
        dt = z_H.dtype
        logits = F.linear(z_H, self.lm_head.weight.to(dt))
        q = F.linear(z_H[:, 0], self.q_head.weight.to(dt), self.q_head.bias.to(dt))
        wide = torch.float64 if dt == torch.float64 else torch.float32
        return logits.to(wide), q.to(wide)

    def new_update(self, batch: int, device=None, seed: Optional[int] = None) -> "eqk.LoopedUpdate":
        """The run object of this model's damped updates (seed, step counter, step norms)."""
        return eqk.LoopedUpdate(batch=batch, damping=self.cfg.damping, noise_std=self.cfg.noise_std,
                                seed=seed, device=device, backend=self.backend)

    # ---- the loop -----------------------------------------------------------------------
    def forward(self, tokens, carry=None, steps: int = 1, grad="last", seed: Optional[int] = None,
                update: Optional["eqk.LoopedUpdate"] = None):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        rounds = steps * self.cfg.H_cycles
        recorded = {"none": 0, "last": 1, "one_step": 1}.get(grad, grad) if isinstance(grad, str) else grad
        if isinstance(recorded, bool) or not isinstance(recorded, int) or not 0 <= recorded <= rounds:
            raise ValueError(f"grad must be 'none', 'last', 'one_step' or an int in [1, {rounds}], "
                             f"got {grad!r}")
        if not torch.is_grad_enabled():
            recorded = 0
        x = self.embed(tokens)
        if carry is None:
            carry = self.initial_carry(x.shape[0], x.device)
        z_H, z_L = (c.detach().to(self.cfg.dtype).contiguous().clone() for c in carry)
        if update is None and torch.compiler.is_compiling():
            raise ValueError("under torch.compile pass update=model.new_update(batch, device, "
                             "seed): creating the update object is host-side work")
        upd = update if update is not None else self.new_update(x.shape[0], x.device, seed)
        if rounds - recorded:
            with torch.no_grad():
                weights = self.L_level.weights(self.cfg.dtype)
                self.run_rounds(upd, z_H, z_L, x.detach(), weights, rounds - recorded)
        if recorded:
            weights = self.L_level.weights(self.cfg.dtype)
            for _ in range(recorded):
                z_H, z_L = self.round(upd, z_H, z_L, x, weights, record=True,
                                      one_step=grad == "one_step")
        logits, q_logits = self.heads(z_H)
        return logits, q_logits, (z_H.detach(), z_L.detach())

    def reasoning_step(self, upd, z_H, z_L, x, weights, path: Optional[str] = None) -> None:
        """One reasoning step (H_cycles rounds), unrecorded and in place on z_H, z_L, on the
        kernel path `path` (default: self.kernel_path(z_H.device)). No host syncs: K calls
        can be captured in one CUDA graph. z_H, z_L, x: (B, seq_len, hidden) contiguous, latent
        dtype; weights: self.L_level.weights(latent dtype)."""
        self.run_rounds(upd, z_H, z_L, x, weights, self.cfg.H_cycles, path)

    def step_runner(self, upd, z_H, z_L, x, weights, capture: Optional[bool] = None,
                    path: Optional[str] = None) -> SegmentRunner:
        """A runner of reasoning steps on static buffers: `.run(k, 0)` makes k steps in place on
        z_H, z_L (reasoning_step's arguments, held by the runner). capture (default: z_H on a
        CUDA device): each k is captured once as a CUDA graph and replayed after a warm-up
        call (eqk.solvers.SegmentRunner; `.describe()` says what ran). Refill z_H / z_L with
        copy_ between runs; replays draw fresh noise from upd's device step counter."""
        cuda = z_H.device.type == "cuda"
        capture = cuda if capture is None else capture
        if capture and not cuda:
            raise ValueError(f"capture needs latents on a CUDA device, got {z_H.device}")
        path = path or self.kernel_path(z_H.device)[0]

        def body(k: int, base: int) -> None:
            for _ in range(k):
                self.reasoning_step(upd, z_H, z_L, x, weights, path)
        return SegmentRunner(body, capture, "captured" if capture else
                             f"eager: {'capture off' if cuda else 'not a CUDA device'}")

    def run_rounds(self, upd, z_H, z_L, x, weights, n: int, path: Optional[str] = None) -> None:
        """n unrecorded rounds in place on z_H, z_L (see reasoning_step)."""
        path = path or self.kernel_path(z_H.device)[0]
        if path == "compile" and not torch.compiler.is_compiling():
            steps, rest = divmod(n, self.cfg.H_cycles)  # two compiled shapes: a step, a round
            for count, times in ((self.cfg.H_cycles, steps), (1, rest)):
                for _ in range(times):
                    _compiled_rounds(self, upd, z_H, z_L, x, weights, count)
            return
        for _ in range(n):
            self.round(upd, z_H, z_L, x, weights, kernels="eager" if path == "compile" else path)

    def update(self, upd, z, inj, weights, record: bool = False, kernels: str = "eager"):
        """The one update formula: z <- (1-damping) z + damping * blocks(z + inj) + noise.
        Fused and in place on z unless `record` (then a new tensor autograd records).
        kernels: "eager" (the block in plain PyTorch) or "fused" (unrecorded only)."""
        if not record:
            if kernels == "fused":
                return self.L_level.update_(upd, z, inj, weights, kernels="fused",
                                            backend=self.backend)
            return upd(z, self.L_level.apply(z + inj, weights))
        f_out = self.L_level.apply(z + inj, weights)
        # Recorded: the value from the fused op (same kernel, noise stream and step counter as
        # inference, much cheaper than drawing the noise with PyTorch ops), the gradient of
        # the linear part; lin - lin.detach() is exactly 0, so the value is the fused one.
        new = upd(z.detach().clone(), f_out.detach())
        lin = (1.0 - upd.damping) * z + upd.damping * f_out
        return new + (lin - lin.detach())

    def round(self, upd, z_H, z_L, x, weights, record: bool = False, one_step: bool = False,
              kernels: str = "eager"):
        """L_cycles updates of z_L (injection z_H + x), then one of z_H (injection z_L).
        Unrecorded: in place on z_H, z_L, on `kernels` ("eager" or "fused"). Recorded: returns
        the new (z_H, z_L); one_step leaves the first L_cycles - 1 updates out of the graph."""
        L = self.cfg.L_cycles
        inj = z_H + x  # z_H does not change during the L cycles: one sum per round
        for k in range(L):
            if record:
                keep = torch.is_grad_enabled() and not (one_step and k < L - 1)
                with torch.set_grad_enabled(keep):
                    z_L = self.update(upd, z_L, inj, weights, record=True)
            else:
                self.update(upd, z_L, inj, weights, kernels=kernels)
        if record:
            z_H = self.update(upd, z_H, z_L, weights, record=True)
        else:
            self.update(upd, z_H, z_L, weights, kernels=kernels)
        return z_H, z_L


def _rounds_eager(model: Reasoner, upd, z_H, z_L, x, weights, n: int) -> None:
    for _ in range(n):
        model.round(upd, z_H, z_L, x, weights, kernels="eager")


_COMPILED = []


def set_compile_backend(backend="inductor") -> None:
    """The torch.compile backend of the compile path (default inductor; CPU tests and dry runs
    use "aot_eager": same graph capture, no code generation). Shapes are static, as in EqR's
    evaluate.py: each batch size is one compile (an evaluation's compaction makes a new one;
    dynamic shapes cannot help yet: block_step's Meta kernel specialises the batch size)."""
    _COMPILED[:] = [torch.compile(_rounds_eager, backend=backend, fullgraph=True, dynamic=False)]


def _compiled_rounds(*args) -> None:
    """The compile path: one compiled function for every model (its guards tell models,
    update objects and round counts apart), in place on z_H, z_L, the update op inside the
    graph. Built on first use (importing the compiler costs seconds). A new seed is a new
    specialisation (the seed is a constant of the update op): one compile per run."""
    if not _COMPILED:
        set_compile_backend()
    _COMPILED[0](*args)
