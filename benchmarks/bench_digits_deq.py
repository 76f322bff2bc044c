"""A real workload, side by side: an implicit conv net on scikit-learn's digits, trained
through torchdeq and through eqkernels with the same model, data, seeds and settings.

What it runs. sklearn.datasets.load_digits (1,797 8x8 images, bundled: no download),
split 1,437 train / 360 test by a seeded permutation. The model:
    x = stem(image)                          Conv2d(1, C, 3) -> (B, C, 8, 8)
    z* = f(z*, x),  f(z, x) = GroupNorm(tanh(conv2(relu(conv1(z))) + x))
    logits = Linear(C*64, 10)(z*)
with conv1 and conv2 spectral-normalised (learnable scale, torchdeq's default apply_norm
options, each library's own implementation). The raw weights are built once and copied to
both libraries. Both train with Adam, the same batches (one seeded order), Anderson forward
(m=6, lam=1e-4) and the implicit (IFT) backward with Anderson on the adjoint; stopping on
the relative residual. torchdeq: apply_norm + get_deq(ift=True) + reset_norm per step, as
its README does; eqkernels: eqk.apply_norm + eqk.DEQ(backward="implicit"), which resets the
normalised weights itself. Training steps alternate between the libraries, so both see the same
machine load.

It prints per library: test accuracy after the last epoch, epochs, wall time per epoch
(median over epochs of the summed step times; the two libraries' steps
alternate), forward solver steps (mean nstep per sample, training and test) and f calls per
training forward, backward solver steps (mean per sample), and memory of one training step
(peak RSS growth on CPU, reset through /proc/self/clear_refs; max_memory_allocated on
CUDA) and the bytes autograd saved for backward in it. Ratios are torchdeq / eqkernels.

Run (from the repository root; ~1-2 minutes on 2 CPU cores with the defaults):

    python benchmarks/bench_digits_deq.py
    python benchmarks/bench_digits_deq.py --epochs 8 --out benchmarks/results/digits_deq_cpu.md
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from timing import environment_lines, report, setup_device, use_repo_checkout, vm_kib

use_repo_checkout()

import eqkernels as eqk  # noqa: E402


# --------------------------------------------------------------------------- data, model

def load_data(seed, device):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    test, train = perm[:360], perm[360:]
    mean, std = images[train].mean(), images[train].std()
    images = (images - mean) / std
    return ((images[train].to(device), labels[train].to(device)),
            (images[test].to(device), labels[test].to(device)))


class Block(nn.Module):
    """f(z, x) = GroupNorm(tanh(conv2(relu(conv1(z))) + x)); counts its calls."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.GroupNorm(4, channels, affine=False)
        self.calls = 0

    def forward(self, z, x):
        self.calls += 1
        return self.norm(torch.tanh(self.conv2(torch.relu(self.conv1(z))) + x))


class Net(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.block = Block(channels)
        self.head = nn.Linear(channels * 64, 10)
        self.deq = None  # set per library

    def forward(self, images):
        x = self.stem(images)
        z = self.deq(x)
        return self.head(z.flatten(1))


class TorchdeqSolve(nn.Module):
    """torchdeq's way: reset_norm each step, deq(f, z0) -> (states, info)."""

    def __init__(self, block, cfg, stats):
        super().__init__()
        import torchdeq

        self.torchdeq, self.block, self.stats = torchdeq, block, stats
        self.core = torchdeq.get_deq(
            f_solver="anderson", b_solver="anderson", f_max_iter=cfg.max_iter,
            b_max_iter=cfg.max_iter, f_tol=cfg.tol, b_tol=cfg.tol, f_stop_mode="rel",
            b_stop_mode="rel", ift=True)

    def forward(self, x):
        self.torchdeq.reset_norm(self.block)
        self.core.train(self.training)
        z_out, info = self.core(lambda z: self.block(z, x), torch.zeros_like(x),
                                backward_writer=self.stats.backward)
        self.stats.forward(info["nstep"])
        return z_out[-1]


class EqkSolve(nn.Module):
    def __init__(self, block, cfg, stats):
        super().__init__()
        self.stats = stats
        self.deq = eqk.DEQ(block, solver="anderson", max_iter=cfg.max_iter, tol=cfg.tol,
                           stop_mode="rel", backward="implicit",
                           solver_kwargs=dict(m=6, lam=1e-4))

    def forward(self, x):
        self.deq.train(self.training)
        z, info = self.deq(x)
        self.stats.forward(info.nstep)
        return z

    def after_backward(self):
        info = self.deq.last_backward_info
        if info is not None:
            self.stats.backward(dict(nstep=info.nstep))
            self.deq.last_backward_info = None


class Stats:
    def __init__(self):
        self.fwd, self.bwd = [], []

    def forward(self, nstep):
        self.fwd.append(float(nstep.float().mean()))

    def backward(self, info):
        self.bwd.append(float(info["nstep"].float().mean()))


def build(lib, raw, cfg):
    net = copy.deepcopy(raw)
    stats = Stats()
    if lib == "torchdeq":
        import torchdeq
        torchdeq.apply_norm(net.block, "spectral_norm")
        net.deq = TorchdeqSolve(net.block, cfg, stats)
    else:
        eqk.apply_norm(net.block, "spectral_norm")
        net.deq = EqkSolve(net.block, cfg, stats)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    return net, opt, stats


# --------------------------------------------------------------------------- memory

def _reset_peak(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # VmHWM := current RSS
    except OSError:
        return None
    return vm_kib("VmRSS")


def _peak_growth_mib(device, start):
    if start is None:
        return None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - start) / 2**20
    peak = vm_kib("VmHWM")
    return None if peak is None else (peak - start) / 1024


def train_step(net, opt, images, labels):
    loss = nn.functional.cross_entropy(net(images), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if isinstance(net.deq, EqkSolve):
        net.deq.after_backward()
    opt.step()
    return float(loss)


def memory_of_step(net, opt, images, labels, device):
    """(peak growth MiB, MiB saved by autograd) of one training step."""
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    start = _reset_peak(device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        train_step(net, opt, images, labels)
    return _peak_growth_mib(device, start), saved[0] / 2**20


@torch.no_grad()
def evaluate(net, data, batch):
    net.eval()
    images, labels = data
    correct = 0
    for i in range(0, len(labels), batch):
        correct += int((net(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum())
    net.train()
    return correct / len(labels)


# --------------------------------------------------------------------------- main

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--max-iter", dest="max_iter", type=int, default=30)
    p.add_argument("--tol", type=float, default=1e-3, help="relative residual, both solves")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="also write the table as markdown here")
    cfg = p.parse_args(argv)
    if cfg.epochs < 1 or cfg.batch < 1 or cfg.max_iter < 1:
        p.error("--epochs, --batch and --max-iter must be >= 1")
    try:
        import sklearn  # noqa: F401
        import torchdeq  # noqa: F401
    except ImportError as exc:
        p.exit(2, f"error: {exc.name} is needed (pip install scikit-learn; "
                  f"pip install --no-deps torchdeq)\n")
    device = setup_device(cfg.device, cfg.threads)

    train_data, test_data = load_data(cfg.seed, device)
    torch.manual_seed(cfg.seed)
    raw = Net(cfg.channels).to(device)
    libs = ("torchdeq", "eqkernels")
    runs = {}
    for lib in libs:
        torch.manual_seed(cfg.seed + 1)  # the same draws (spectral-norm vectors) for both
        runs[lib] = build(lib, raw, cfg)
    # Memory of one step each, on the same batch, before training (same weights).
    images, labels = train_data[0][:cfg.batch], train_data[1][:cfg.batch]
    memory = {}
    for lib in libs:
        probe = build(lib, raw, cfg)
        train_step(*probe[:2], images, labels)  # warm-up (allocator, kernels)
        memory[lib] = memory_of_step(*probe[:2], images, labels, device)

    order_gen = torch.Generator().manual_seed(cfg.seed + 2)
    epoch_times = {lib: [] for lib in libs}
    step_times = {lib: [] for lib in libs}
    calls = {lib: [] for lib in libs}
    n = len(train_data[1])
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=order_gen).to(device)
        spent = {lib: 0.0 for lib in libs}
        losses = {lib: [] for lib in libs}
        start_calls = {lib: runs[lib][0].block.calls for lib in libs}
        forwards = 0
        for k, i in enumerate(range(0, n, cfg.batch)):
            idx = order[i:i + cfg.batch]
            # The libraries alternate step by step (first one swapping each batch), so both
            # see the same machine load on a shared machine.
            for lib in (libs if k % 2 == 0 else libs[::-1]):
                net, opt, _ = runs[lib]
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                losses[lib].append(train_step(net, opt, train_data[0][idx], train_data[1][idx]))
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                dt = time.perf_counter() - t0
                spent[lib] += dt
                step_times[lib].append(dt)
            forwards += 1
        for lib in libs:
            epoch_times[lib].append(spent[lib])
            calls[lib].append((runs[lib][0].block.calls - start_calls[lib]) / forwards)
        print(f"epoch {epoch + 1}/{cfg.epochs}: " + ", ".join(
            f"{lib} loss {statistics.mean(losses[lib]):.4f} {spent[lib]:.2f} s" for lib in libs),
            flush=True)

    rows, results = [], {}
    for lib in libs:
        net, _, stats = runs[lib]
        n_train_fwd = len(stats.fwd)
        acc = evaluate(net, test_data, 360)
        test_steps = statistics.mean(stats.fwd[n_train_fwd:]) if len(stats.fwd) > n_train_fwd \
            else float("nan")
        peak, saved = memory[lib]
        results[lib] = dict(acc=acc, s=statistics.median(epoch_times[lib]),
                            fwd=statistics.mean(stats.fwd[:n_train_fwd]),
                            bwd=statistics.mean(stats.bwd) if stats.bwd else float("nan"))
        rows.append([lib, f"{100 * acc:.1f}", str(cfg.epochs), f"{results[lib]['s']:.2f}",
                     f"{results[lib]['fwd']:.1f}", f"{statistics.mean(calls[lib]):.1f}",
                     f"{test_steps:.1f}", f"{results[lib]['bwd']:.1f}",
                     "-" if peak is None else f"{peak:.1f}", f"{saved:.2f}"])
    t, e = results["torchdeq"], results["eqkernels"]
    step_ratio = statistics.median(a / b for a, b in zip(step_times["torchdeq"],
                                                         step_times["eqkernels"]))
    rows.append(["torchdeq / eqkernels", "", "", f"{t['s'] / e['s']:.2f}",
                 f"{t['fwd'] / e['fwd']:.2f}", "", "", f"{t['bwd'] / e['bwd']:.2f}",
                 "", f"{memory['torchdeq'][1] / memory['eqkernels'][1]:.2f}"])
    headers = ["library", "test acc %", "epochs", "s / epoch", "fwd steps (train)",
               "f calls / fwd", "fwd steps (test)", "bwd steps", "step peak MiB",
               "step saved MiB"]
    header = [f"Digits DEQ: torchdeq vs eqkernels ({device.type})",
              *environment_lines(device),
              f"load_digits 1437 train / 360 test; C={cfg.channels}, batch {cfg.batch}, "
              f"Adam lr {cfg.lr}, {cfg.epochs} epochs, seed {cfg.seed}; Anderson m=6 lam=1e-4, "
              f"max_iter {cfg.max_iter}, rel tol {cfg.tol}, both solves; IFT backward; "
              f"spectral norm (learnable scale) on the block's convs"]
    notes = ["fwd steps: mean per-sample nstep of the training forwards (torchdeq: the step of"
             " its lowest residual; eqkernels: f evaluations until the sample stopped); f calls"
             " / fwd: block evaluations per training forward (the whole batch each);"
             " bwd steps: the adjoint solve's mean nstep.",
             "step peak MiB: growth of peak RSS (CPU) or max_memory_allocated (CUDA) over one"
             " training step (coarse on CPU: the allocator reuses pages it already holds, so small"
             " steps can read 0); step saved MiB: bytes autograd saved for backward in it.",
             "s / epoch: median over epochs of the summed training-step wall times; the"
             " libraries' steps alternate, so both see the same machine load. Median ratio of"
             f" paired steps (torchdeq / eqkernels): {step_ratio:.2f}."]
    report(header, headers, rows, notes, cfg.out)


if __name__ == "__main__":
    main()
