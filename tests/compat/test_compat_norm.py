"""compat norms: torchdeq checkpoints (weight_norm and spectral_norm) load strictly and ours
load into torchdeq; spectral_norm's power-iteration semantics are torchdeq's; what
apply_norm cannot normalise is named in a warning."""
import io
import math
import warnings

import pytest
import torch
from torch import nn

import eqkernels as eqk
import eqkernels.compat.torchdeq as compat

torchdeq = pytest.importorskip("torchdeq")
SEED = 7


class OwnWeights(nn.Module):
    """A module holding its own matrices (IGNN-style), registered for both norms."""

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(6, 6) / 6)
        self.Omega = nn.Parameter(torch.randn(6, 3) / 3)

    def forward(self, x):  # x: (6, N)
        return torch.tanh(self.W @ x) + self.Omega @ x[:3]


for _lib in (torchdeq, compat):
    for _kind in ("weight_norm", "spectral_norm"):
        _lib.register_norm_module(OwnWeights, _kind, names=["W", "Omega"], dims=[0, 0])


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)
        self.conv = nn.Conv1d(6, 6, 3, padding=1)
        self.deconv = nn.ConvTranspose1d(6, 4, 3, padding=1)  # out channels on dim 1
        self.own = OwnWeights()

    def forward(self, x):  # x: (B, 6, L)
        h = self.conv(torch.tanh(self.lin(x.transpose(1, 2)).transpose(1, 2)))
        return self.deconv(h).sum() + self.own(h[0]).sum()


def _build(lib, seed, norm_type, **norm_kwargs):
    torch.manual_seed(seed)
    model = Model()
    lib.apply_norm(model, norm_type, **norm_kwargs)
    return model


def _train_step(lib, model):
    """One optimiser step, so the saved weights are not the initial ones."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    lib.reset_norm(model)
    model(torch.randn(2, 6, 5)).backward()
    opt.step()


@pytest.mark.parametrize("norm_type, kwargs", [("weight_norm", {}),
                                               ("spectral_norm", {}),
                                               ("spectral_norm", dict(learn_scale=False)),
                                               ("weight_norm", dict(clip=True))])
@pytest.mark.parametrize("direction", ["torchdeq->eqk", "eqk->torchdeq"])
def test_checkpoints_load_strictly_both_ways(norm_type, kwargs, direction):
    src, dst = (torchdeq, compat) if direction == "torchdeq->eqk" else (compat, torchdeq)
    trained = _build(src, SEED, norm_type, **kwargs)
    _train_step(src, trained)
    buf = io.BytesIO()
    torch.save(trained.state_dict(), buf)
    buf.seek(0)
    fresh = _build(dst, SEED + 1, norm_type, **kwargs)  # other weights, other u / v
    fresh.load_state_dict(torch.load(buf), strict=True)
    x = torch.randn(2, 6, 5)
    for lib, model in ((src, trained), (dst, fresh)):
        model.eval()
        lib.reset_norm(model)  # eval: no power-iteration step
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), trained(x), rtol=1e-6, atol=1e-6)
    assert fresh.state_dict().keys() == trained.state_dict().keys()
    expected = {"weight_norm": {"lin.weight_g", "lin.weight_v"},
                "spectral_norm": {"lin.weight_orig", "lin.weight_u", "lin.weight_v"}}[norm_type]
    assert expected <= set(fresh.state_dict())


@pytest.mark.parametrize("norm_type, kwargs", [("weight_norm", {}), ("spectral_norm", {}),
                                               ("spectral_norm", dict(learn_scale=False))])
def test_torchdeq_checkpoints_load_into_eqkernels_own_norm(norm_type, kwargs):
    """eqk.apply_norm (parametrisations, not compat) also takes torchdeq's names."""
    torch.manual_seed(SEED)
    trained = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Conv1d(6, 4, 1))
    torchdeq.apply_norm(trained, norm_type, **kwargs)
    _train_step_seq(trained)
    torch.manual_seed(SEED + 1)
    fresh = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Conv1d(6, 4, 1))
    eqk.apply_norm(fresh, norm_type, **kwargs)
    fresh.load_state_dict(trained.state_dict(), strict=True)
    trained.eval()
    fresh.eval()
    torchdeq.reset_norm(trained)
    eqk.reset_norm(fresh)
    x = torch.randn(3, 6)
    with torch.no_grad():
        torch.testing.assert_close(fresh[2](fresh[1](fresh[0](x))[:, :, None]),
                                   trained[2](trained[1](trained[0](x))[:, :, None]))


def _train_step_seq(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torchdeq.reset_norm(model)
    model[2](model[1](model[0](torch.randn(3, 6)))[:, :, None]).sum().backward()
    opt.step()


def test_mdeq_checkpoint_from_torchdeq_loads_strictly():
    import tdq_programs
    argv = tdq_programs.with_flags(tdq_programs.load("mdeq", "torchdeq").ARGV, f_max_iter=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = tdq_programs.load("mdeq", "torchdeq").run(argv=argv, steps=1)["model"]
        prog = tdq_programs.load("mdeq", "eqk")
        ours = prog.MDEQ(prog.build_parser().parse_args(argv))
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 8, 8)
    ours.eval()
    theirs.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(ours(x)[0], theirs(x)[0], rtol=1e-5, atol=1e-5)


def _sigma(weight):
    return float(torch.linalg.matrix_norm(weight.detach(), ord=2))


def test_spectral_norm_power_iteration_is_torchdeqs():
    """One power-iteration step per reset from random u, v: the same weights as torchdeq's
    step for step (so ||W||_2 starts well above the target, ~1.5, as there)."""
    layers = {}
    for lib in (torchdeq, compat):
        torch.manual_seed(SEED)
        layer = nn.Linear(64, 64)
        lib.apply_norm(layer, "spectral_norm", learn_scale=False)
        layers[lib] = layer
    sigmas = []
    for _ in range(3):
        for lib, layer in layers.items():
            lib.reset_norm(layer)
        torch.testing.assert_close(layers[compat].weight, layers[torchdeq].weight)
        sigmas.append(_sigma(layers[compat].weight))
    assert sigmas[0] > 1.2 and sigmas[0] > sigmas[1] > sigmas[2] > 1.0, sigmas
    # eqkernels' own norm warms up its power iteration (documented difference): ||W||_2 = 1.
    torch.manual_seed(SEED)
    own = eqk.apply_norm(nn.Linear(64, 64), "spectral_norm", learn_scale=False)
    eqk.reset_norm(own)
    assert math.isclose(_sigma(own.weight), 1.0, rel_tol=2e-2)
    # the args entries win (sn_n_power_iters: steps per reset), as in torchdeq
    args = dict(norm_type="spectral_norm", sn_n_power_iters=4, norm_no_scale=True)
    for lib in (torchdeq, compat):
        torch.manual_seed(SEED)
        layers[lib] = nn.Linear(64, 64)
        lib.apply_norm(layers[lib], "weight_norm", args=args)
        lib.reset_norm(layers[lib])
    assert layers[compat]._deq_norm.n_power_iterations == 4
    assert not hasattr(layers[compat], "weight_g")
    torch.testing.assert_close(layers[compat].weight, layers[torchdeq].weight)


def test_norm_is_never_skipped_silently():
    class Custom(nn.Module):  # own matrices, never registered
        def __init__(self):
            super().__init__()
            self.A = nn.Parameter(torch.randn(4, 4))
            self.b = nn.Parameter(torch.randn(4))

    with pytest.warns(UserWarning, match=r"normalised nothing.*A \(4, 4\).*register_norm_module"):
        compat.apply_norm(Custom())

    class MyLinear(nn.Linear):  # torchdeq matches exact types
        pass

    model = nn.Sequential(nn.Linear(3, 3), MyLinear(3, 3))
    with pytest.warns(UserWarning, match=r"skipped 1 \(MyLinear\).*register_norm_module"):
        compat.apply_norm(model)
    assert hasattr(model[0], "weight_v") and not hasattr(model[1], "weight_v")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compat.apply_norm(Custom(), "none")  # asked for nothing: nothing to say
        compat.apply_norm(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)), "weight_norm")


def test_filters_remove_norm_and_errors():
    model = nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3)))
    compat.apply_norm(model, filter_out=["1.1"], prefix_filter_out="0")
    assert [hasattr(m, "_deq_norm") for m in (model[0], model[1][0], model[1][1])] == \
        [False, True, False]
    compat.reset_norm(model)
    normalised = model[1][0].weight.detach().clone()
    compat.remove_norm(model)
    assert isinstance(model[1][0].weight, nn.Parameter)
    torch.testing.assert_close(model[1][0].weight.detach(), normalised)
    with pytest.raises(TypeError, match="unknown keyword arguments.*clip_val"):
        compat.apply_norm(nn.Linear(2, 2), clip_val=1.0)
    with pytest.raises(TypeError, match="n_power_iterations"):  # as torchdeq's WeightNorm
        compat.apply_norm(nn.Linear(2, 2), "weight_norm", n_power_iterations=2)
    with pytest.raises(ValueError, match="norm_type must be 'none' or one of"):
        compat.apply_norm(nn.Linear(2, 2), "batch_norm")
