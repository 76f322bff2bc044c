"""DDP: two gloo processes training a DEQ with the implicit backward end with the same
parameters as one process training on the concatenated batch."""
import datetime
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import eqkernels as eqk

SEED, STEPS, B, N = 5, 3, 8, 12


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(N, N, dtype=torch.float64)
        self.inj = nn.Linear(N, N, dtype=torch.float64)

    def forward(self, z, x):
        return torch.tanh(0.9 * self.lin(z) + self.inj(x))


def make_model():
    torch.manual_seed(SEED)
    block = eqk.apply_spectral_norm(Block())  # its power-iteration buffers travel too
    return eqk.DEQ(block, solver="anderson", max_iter=100, tol=1e-11, backward="implicit",
                   backward_tol=1e-11, backward_max_iter=100).train()


def data():
    gen = torch.Generator().manual_seed(SEED + 1)
    return [(torch.randn(B, N, generator=gen, dtype=torch.float64),
             torch.randn(B, N, generator=gen, dtype=torch.float64)) for _ in range(STEPS)]


def train(model, batches, rows=slice(None)):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for x, y in batches:
        z, _ = model(x[rows])
        loss = (z - y[rows]).square().sum(dim=1).mean()  # mean over samples: DDP averages
        opt.zero_grad()
        loss.backward()
        opt.step()


def _worker(rank, world, port, out_path):
    torch.set_num_threads(1)
    # A bounded wait (the default is 30 minutes): a lost peer fails the test instead of hanging CI.
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=120))
    try:
        model = nn.parallel.DistributedDataParallel(make_model())
        per = B // world
        train(model, data(), rows=slice(rank * per, (rank + 1) * per))
        if rank == 0:
            torch.save({k: v.detach().clone() for k, v in model.module.state_dict().items()},
                       out_path)
        # Rank 0 hosts the TCP store: no rank tears the group down while another still uses it
        # (under load a rank left in destroy_process_group waited on the gone store).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_process_ddp_matches_one_process_on_the_concatenated_batch(tmp_path):
    out = str(tmp_path / "ddp_rank0.pt")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    ddp_state = torch.load(out)

    single = make_model()
    initial = {k: v.detach().clone() for k, v in single.state_dict().items()}
    train(single, data())
    moved = 0
    for name, value in single.state_dict().items():
        torch.testing.assert_close(ddp_state[name], value, rtol=1e-9, atol=1e-11,
                                   msg=lambda m: f"{name}: {m} (seed {SEED})")
        moved += not torch.equal(value, initial[name])
    assert moved >= 4  # the weights, biases and power-iteration vectors all changed
