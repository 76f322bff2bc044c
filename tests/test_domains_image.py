"""The image-deblurring domain: synthetic images, the blur operator and its adjoint, PSNR, the
contractive block, and that the model trains."""
import os
import random
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))

from domains.domain import RunConfig  # noqa: E402
from domains.image import DOMAIN, circular_conv, single_channel_conv_norm  # noqa: E402
from domains.image_data import (BlurOperator, blurred_measurements, gaussian_kernel,  # noqa: E402
                                psnr, random_shape_images)
from domains.train import train  # noqa: E402
from grad_checks import assert_finite_nonzero_grads  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_seed():
    torch.manual_seed(random.randrange(2**31))


def tiny_config(**changes) -> RunConfig:
    cfg = RunConfig(train_iters=3, train_steps=40, batch_size=16, lr=5e-3, warmup_steps=5,
                    n_train=64, n_test=16,
                    model=dict(width=8, feature_layers=2, kernel=3, contraction=0.9,
                               mu_init=0.05, damping=1.0, backward="phantom",
                               deq=dict(phantom_steps=2)),
                    data=dict(size=12, blur_sigma=1.0, noise_std=0.01, max_shapes=3))
    return cfg.with_overrides(**changes)


def random_seed() -> int:
    return random.randrange(2**31)


def test_domain_declares_what_the_harness_reads():
    assert DOMAIN.name == "image" and DOMAIN.metric == "PSNR (dB)" and DOMAIN.higher_is_better
    assert set(DOMAIN.configs) == {"small", "gpu"}
    small, gpu = DOMAIN.configs["small"], DOMAIN.configs["gpu"]
    assert 10 * small.train_iters <= small.eval_max_iters <= 100 * small.train_iters
    assert gpu.data["size"] > small.data["size"] and gpu.model["width"] > small.model["width"]


def test_images_are_in_range_seeded_and_not_flat():
    seed, size = random_seed(), random.choice([8, 12, 17])
    images = random_shape_images(6, size, seed)
    assert images.shape == (6, 1, size, size) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert (images.flatten(1).std(dim=1) > 0.01).all()  # every image holds at least a shape
    torch.testing.assert_close(images, random_shape_images(6, size, seed), rtol=0, atol=0)
    assert not torch.equal(images, random_shape_images(6, size, seed + 1))


def test_make_data_pairs_measurements_with_their_images():
    cfg = tiny_config()
    seed = random_seed()
    batch = DOMAIN.make_data(5, seed, cfg)
    assert batch["input"].shape == batch["target"].shape == (5, 1, 12, 12)
    torch.testing.assert_close(batch["input"], DOMAIN.make_data(5, seed, cfg)["input"])
    blurred = DOMAIN.operator(cfg)(batch["target"].double()).float()
    noise = batch["input"] - blurred
    assert 0.5 * cfg.data["noise_std"] < noise.std() < 2 * cfg.data["noise_std"]
    with pytest.raises(ValueError, match="noise_std"):
        blurred_measurements(batch["target"], DOMAIN.operator(cfg), -1.0, seed)


def test_blur_adjoint_and_normal_solve_in_float64():
    size = random.choice([7, 10, 16])
    kernel = torch.rand(5, 5, dtype=torch.float64)  # not symmetric: A^T != A
    A = BlurOperator(kernel, size)
    x = torch.randn(3, 1, size, size, dtype=torch.float64)
    y = torch.randn(3, 1, size, size, dtype=torch.float64)
    assert A(x).dtype == torch.float64
    lhs, rhs = (A(x) * y).sum(), (x * A.adjoint(y)).sum()
    assert lhs.item() == pytest.approx(rhs.item(), rel=1e-12, abs=1e-12)
    assert (A(x) - A.adjoint(x)).abs().max() > 1e-3
    mu = random.uniform(0.01, 1.0)
    v = A.solve_normal(y, mu)
    torch.testing.assert_close(A.adjoint(A(v)) + mu * v, y, rtol=1e-10, atol=1e-10)


def test_blur_is_the_centred_circular_convolution():
    size = 9
    kernel = torch.rand(3, 3, dtype=torch.float64)
    A = BlurOperator(kernel, size)
    r, c = random.randrange(size), random.randrange(size)
    delta = torch.zeros(size, size, dtype=torch.float64)
    delta[r, c] = 1.0
    expected = torch.zeros(size, size, dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            expected[(r + i - 1) % size, (c + j - 1) % size] += kernel[i, j]
    torch.testing.assert_close(A(delta), expected, rtol=0, atol=1e-12)
    g = gaussian_kernel(random.uniform(0.5, 2.0))
    assert g.sum().item() == pytest.approx(1.0) and torch.equal(g, g.flip(0).flip(1))
    with pytest.raises(ValueError, match="kernel"):
        BlurOperator(torch.ones(4, 4), size)


def test_psnr_of_a_known_offset():
    target = torch.rand(4, 1, 8, 8)
    offset = random.uniform(0.01, 0.2)
    values = psnr(target + offset, target)
    torch.testing.assert_close(values, torch.full((4,), -20 * torch.log10(torch.tensor(offset))),
                               rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="shape"):
        psnr(target, target[:, :, :4])


def test_conv_norm_is_the_exact_operator_norm():
    size, channels = 6, random.choice([2, 3])
    weight = torch.randn(channels, 1, 3, 3, dtype=torch.float64)
    basis = torch.eye(size * size, dtype=torch.float64).view(-1, 1, size, size)
    dense = circular_conv(basis, weight).flatten(1).T  # (channels * size^2, size^2)
    exact = torch.linalg.matrix_norm(dense, ord=2)
    assert single_channel_conv_norm(weight, size).item() == pytest.approx(exact.item(), rel=1e-9)
    transposed = weight.transpose(0, 1)  # one output channel: the norm of the adjoint map
    assert single_channel_conv_norm(transposed, size).item() == pytest.approx(exact.item(),
                                                                              rel=1e-9)


def test_block_is_a_contraction_in_z():
    cfg = tiny_config()
    model = DOMAIN.build_model(cfg).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    block = model.deq.block
    x = model.inject(torch.randn(4, 1, 12, 12, dtype=torch.float64))
    z, dz = torch.randn(4, 1, 12, 12, dtype=torch.float64), torch.randn(4, 1, 12, 12,
                                                                         dtype=torch.float64)
    with torch.no_grad():
        ratio = ((block(z + dz, x) - block(z, x)).flatten(1).norm(dim=1)
                 / dz.flatten(1).norm(dim=1))
    assert (ratio <= cfg.model["contraction"] + 1e-12).all() and (ratio > 0).all()


def test_forward_and_backward_give_finite_nonzero_gradients():
    cfg = tiny_config()
    model = DOMAIN.build_model(cfg)
    batch = DOMAIN.make_data(4, random_seed(), cfg)
    pred = model(batch["input"])
    assert pred.shape == (4, 1, 12, 12)
    loss = DOMAIN.loss(pred, batch)
    assert torch.isfinite(loss)
    loss.backward()
    assert_finite_nonzero_grads(model)
    assert DOMAIN.quality(pred, batch).shape == (4,)


def test_training_improves_psnr_on_a_tiny_set():
    # 150 steps: over 30 random seeds the loss ratio was 0.35-0.65 and the PSNR gain >= 1.9 dB;
    # at 40 steps the ratio reached 0.80 and the test failed on CI.
    cfg = tiny_config(train_steps=150)
    model = DOMAIN.build_model(cfg)
    seed = random_seed()
    data = DOMAIN.make_data(cfg.n_train, seed, cfg)
    with torch.no_grad():
        pred = model(data["input"])
        loss_before, psnr_before = DOMAIN.loss(pred, data), DOMAIN.quality(pred, data).mean()
    train(DOMAIN, model, data, cfg, device=torch.device("cpu"), seed=seed, progress=False)
    with torch.no_grad():
        pred = model(data["input"])
        loss_after, psnr_after = DOMAIN.loss(pred, data), DOMAIN.quality(pred, data).mean()
    # Measured on the whole set before and after: the running training loss averages over
    # minibatches of differing difficulty and is too noisy for a 40-step run.
    assert loss_after < 0.8 * loss_before
    assert psnr_after > psnr_before + 0.5
