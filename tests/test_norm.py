"""DEQ-aware normalisation: one normalised weight per forward, the formula against a plain
reference, gradients to the raw weights, options and filters."""
import copy

import pytest
import torch
from torch import nn

import eqkernels as eqk
from eqkernels.nn import apply_norm, remove_norm, reset_norm

SEED = 2024


class Block(nn.Module):
    def __init__(self, n, dtype=torch.float32):
        super().__init__()
        self.lin = nn.Linear(n, n, dtype=dtype)
        self.out = nn.Linear(n, n, dtype=dtype)

    def forward(self, z, x):
        return torch.tanh(self.out(torch.relu(self.lin(z))) + x)


def reference_weight(raw, u, v, g, kind, clip, clip_value, dim=0):
    """Plain formula: raw * min(clip_value, g / ||raw||) with the stored singular vectors."""
    mat = raw.movedim(dim, 0).reshape(raw.shape[dim], -1)
    if kind == "spectral_norm":
        norm = torch.dot(u, mat @ v)
    else:
        shape = [1] * raw.dim()
        shape[dim] = raw.shape[dim]
        norm = mat.norm(dim=1).reshape(shape)
    factor = g / norm
    if clip:
        factor = torch.minimum(factor, torch.full_like(factor, clip_value))
    return raw * factor


@pytest.mark.parametrize("kind", ["spectral_norm", "weight_norm"])
@pytest.mark.parametrize("learn_scale", [True, False])
@pytest.mark.parametrize("clip", [False, True])
def test_weight_and_gradients_match_plain_reference(kind, learn_scale, clip):
    torch.manual_seed(SEED)
    layer = nn.Linear(7, 5, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.mul_(3.0)
    apply_norm(layer, kind, learn_scale=learn_scale, clip=clip, clip_value=0.8,
               target_norm=1.3)
    norm = layer.parametrizations.weight[0]
    if learn_scale:  # make the scale non-trivial so its gradient means something
        with torch.no_grad():
            norm.g.copy_(torch.rand_like(norm.g) + 0.5)
    x = torch.randn(4, 7, dtype=torch.float64)
    layer.eval()  # no power-iteration update: u, v stay what the reference reads
    out = layer(x)
    raw = layer.parametrizations.weight.original.detach().clone().requires_grad_()
    g = norm.g.detach().clone().requires_grad_() if learn_scale else torch.tensor(1.3,
                                                                             dtype=torch.float64)
    u, v = (norm._u, norm._v) if kind == "spectral_norm" else (None, None)
    ref_w = reference_weight(raw, u, v, g, kind, clip, 0.8)
    ref = x @ ref_w.t() + layer.bias.detach()
    torch.testing.assert_close(out, ref)
    cot = torch.randn_like(out)
    out.backward(cot)
    ref.backward(cot)
    torch.testing.assert_close(layer.parametrizations.weight.original.grad, raw.grad)
    if learn_scale:
        torch.testing.assert_close(norm.g.grad, g.grad)


def test_spectral_norm_reaches_sigma_max_and_clip_leaves_small_layers_alone():
    torch.manual_seed(SEED)
    layer = nn.Linear(16, 16, dtype=torch.float64)
    q1, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))
    spectrum = torch.linspace(1.5, 0.1, 16, dtype=torch.float64)
    spectrum[0] = 3.0  # a clear gap: power iteration converges fast
    with torch.no_grad():
        layer.weight.copy_(q1 @ torch.diag(spectrum) @ q2.t())
    apply_norm(layer, "spectral_norm", learn_scale=False, n_power_iterations=30)
    layer.train()
    reset_norm(layer)
    assert float(torch.linalg.matrix_norm(layer.weight.detach(), 2)) == pytest.approx(1, abs=1e-6)
    small = nn.Linear(16, 16, dtype=torch.float64)
    with torch.no_grad():
        small.weight.mul_(0.01)
    before = small.weight.detach().clone()
    apply_norm(small, "spectral_norm", learn_scale=False, clip=True, clip_value=1.0)
    torch.testing.assert_close(small.weight.detach(), before)  # sigma < 1: unchanged


def test_training_mode_map_is_fixed_between_resets():
    """Without reset, a training-mode spectral norm takes a power-iteration step per call
    (the old behaviour that broke DEQ solves); after reset_norm every call sees one weight."""
    torch.manual_seed(SEED)
    block = eqk.apply_spectral_norm(Block(32)).train()
    u0 = block.lin.parametrizations.weight[0]._u.clone()
    reset_norm(block)
    u1 = block.lin.parametrizations.weight[0]._u.clone()
    w1 = block.lin.weight
    for _ in range(3):
        assert block.lin.weight is w1
    assert torch.equal(block.lin.parametrizations.weight[0]._u, u1)
    assert not torch.equal(u0, u1)  # exactly one update happened, at the reset
    # An optimizer step on the raw weight invalidates the cached one.
    with torch.no_grad():
        block.lin.parametrizations.weight.original.add_(0.1)
    assert block.lin.weight is not w1


def test_cache_released_after_backward_and_recomputed_with_graph():
    torch.manual_seed(SEED)
    block = eqk.apply_spectral_norm(Block(8)).train()
    x = torch.randn(3, 8)
    with torch.no_grad():
        reset_norm(block)  # cached without a graph ...
    out = block(torch.zeros(3, 8), x)  # ... so a grad-enabled call recomputes it
    out.sum().backward()
    assert block.lin.parametrizations.weight.original.grad is not None
    reset_norm(block)
    w = block.lin.weight
    block(torch.zeros(3, 8), x).sum().backward()
    assert block.lin.weight is not w  # the backward spent the cached graph: released
    block(torch.zeros(3, 8), x).sum().backward()  # and a second step works


def test_readme_block_converges_in_training_mode():
    torch.manual_seed(0)
    block = eqk.apply_spectral_norm(Block(256))
    deq = eqk.DEQ(block, solver="anderson", max_iter=50, tol=1e-4).train()
    z, info = deq(torch.randn(32, 256))
    assert bool(info.converged.all()), info.summary()
    deq.eval()
    _, info_eval = deq(torch.randn(32, 256))
    assert bool(info_eval.converged.all())


def test_deq_gradients_match_a_plain_block_with_the_same_weights():
    """The DEQ's implicit gradient w.r.t. the raw weights equals that of a plain block whose
    weight is the reference formula of the raw parameters (float64)."""
    torch.manual_seed(SEED)
    block = Block(6, dtype=torch.float64)
    eqk.apply_spectral_norm(block, learn_scale=True)
    deq = eqk.DEQ(block, max_iter=200, tol=1e-12, backward="implicit", backward_tol=1e-12,
                  backward_max_iter=200).train()
    x = torch.randn(3, 6, dtype=torch.float64)
    z, _ = deq(x)
    z.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in block.named_parameters()}

    norms = {name: getattr(block, name).parametrizations.weight[0] for name in ("lin", "out")}
    raws = {name: getattr(block, name).parametrizations.weight.original.detach().clone()
            .requires_grad_() for name in norms}
    gs = {name: norms[name].g.detach().clone().requires_grad_() for name in norms}
    # The forward's reset took one power step; the reference uses the vectors it left.
    ws = {name: reference_weight(raws[name], norms[name]._u, norms[name]._v, gs[name],
                                 "spectral_norm", False, 1.0) for name in norms}

    def plain(zz):
        h = torch.relu(zz @ ws["lin"].t() + block.lin.bias)
        return torch.tanh(h @ ws["out"].t() + block.out.bias + x)

    zr = z.detach()
    for _ in range(300):  # the same fixed point by plain iteration
        zr = plain(zr).detach()
    zr = zr.requires_grad_()
    J = torch.autograd.functional.jacobian(lambda v: plain(v.reshape(3, 6)).reshape(-1),
                                           zr.reshape(-1))
    gz = 2 * zr.detach().reshape(-1)
    adj = torch.linalg.solve(torch.eye(18, dtype=torch.float64) - J.t(), gz)
    out = plain(zr.detach())
    params = [raws["lin"], gs["lin"], raws["out"], gs["out"]]
    ref = torch.autograd.grad(out.reshape(-1), params, adj)
    got = [grads["lin.parametrizations.weight.original"], grads["lin.parametrizations.weight.0.g"],
           grads["out.parametrizations.weight.original"], grads["out.parametrizations.weight.0.g"]]
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-7, atol=1e-9)


def test_filters_conv_transpose_and_remove():
    torch.manual_seed(SEED)
    model = nn.ModuleDict(dict(embedding=nn.Linear(4, 4), body=nn.Sequential(
        nn.Conv2d(3, 5, 3), nn.ConvTranspose2d(5, 3, 3)), head=nn.Linear(4, 2)))
    x = torch.randn(2, 3, 6, 6)
    before = model["body"](x)
    apply_norm(model, "weight_norm", filter_out="embed", prefix_filter_out=["head"])
    assert not hasattr(model["embedding"], "parametrizations")
    assert not hasattr(model["head"], "parametrizations")
    conv_t = model["body"][1]
    assert conv_t.parametrizations.weight[0].g.shape == (1, 3, 1, 1)  # out channels: dim 1
    torch.testing.assert_close(model["body"](x), before)  # weight norm starts at the same map
    copy.deepcopy(model)  # the cached tensor does not block copies
    remove_norm(model)
    assert isinstance(conv_t.weight, nn.Parameter)
    torch.testing.assert_close(model["body"](x), before)


def test_bad_options_name_the_argument():
    with pytest.raises(ValueError, match="norm_type"):
        apply_norm(nn.Linear(2, 2), "batch_norm")
    with pytest.raises(ValueError, match="n_power_iterations"):
        apply_norm(nn.Linear(2, 2), "spectral_norm", n_power_iterations=0)
    with pytest.raises(TypeError, match="filter_out"):
        apply_norm(nn.Linear(2, 2), filter_out=[3])
    assert apply_norm(nn.Linear(2, 2), "none").weight.__class__ is nn.Parameter
