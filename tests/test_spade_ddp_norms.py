"""SPADE students under DDP: CAT's synchronized batch norm is ``torch.nn.SyncBatchNorm`` on several GPUs
with NCCL; with gloo or on CPU the statistics stay per process and the run says so in one line."""

from __future__ import annotations

import socket

import pytest
import torch

from nas_prune.device import sync_batch_norm_plan, sync_batch_norms
from nas_prune.loop import RunWarning
from nas_prune.families.spade import build_spade_generator
from seg_helpers import tiny_spade_arch, write_label_folder

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.mark.parametrize("world,device,backend,convert,said", [
    (1, CUDA, "nccl", False, False),  # one process: nothing to synchronise
    (2, CUDA, "nccl", True, False),
    (4, CUDA, "gloo", False, True),  # several processes on one GPU
    (2, CPU, "gloo", False, True),
])
def test_sync_batch_norm_plan(world, device, backend, convert, said):
    got, note = sync_batch_norm_plan(world=world, device=device, backend=backend)
    assert got is convert and (note is not None) is said
    if said:
        assert f"per process ({world} processes, {backend} on {device.type})" in note and "\n" not in note


def _bn_counts(module):
    return (sum(isinstance(m, torch.nn.SyncBatchNorm) for m in module.modules()),
            sum(type(m) is torch.nn.BatchNorm2d for m in module.modules()))


def test_conversion_keeps_keys_weights_and_outputs():
    torch.manual_seed(0)
    plain = build_spade_generator(tiny_spade_arch()).eval()
    n_bn = _bn_counts(plain)[1]
    assert n_bn > 10
    same, note = sync_batch_norms(plain, world=2, device=CPU, backend="gloo")
    assert same is plain and _bn_counts(plain) == (0, n_bn) and "per process" in note
    copy = build_spade_generator(tiny_spade_arch())
    copy.load_state_dict(plain.state_dict())
    synced, note = sync_batch_norms(copy, world=2, device=CUDA, backend="nccl")  # the module may stay on CPU
    assert note is None and _bn_counts(synced) == (n_bn, 0)
    ref = plain.state_dict()
    assert synced.state_dict().keys() == ref.keys()
    assert all(torch.equal(v, ref[k]) for k, v in synced.state_dict().items())
    seg = torch.rand(2, 6, 32, 32)
    with torch.no_grad():
        assert torch.equal(synced.eval()(seg), plain(seg))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_process_env(monkeypatch):
    """A process group of one (gloo) while WORLD_SIZE says 2: the run takes the DDP path of two processes."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(key, value)
    yield
    dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore:the student has no weights")
def test_distill_on_gloo_keeps_per_process_statistics_and_says_so(tmp_path, two_process_env, monkeypatch):
    from nas_prune import device
    from nas_prune.distill import DistillConfig, open_run

    data = write_label_folder(tmp_path / "data", n_train=4, n_test=1, n_labels=5)
    arch = tiny_spade_arch()
    cfg = DistillConfig(epochs=1, epochs_decay=0, batch_size=2, crop_size=32, preprocess="resize", workers=0, ndf=4,
                        lambda_vgg=0.0, distill={}, progress=False, device="cpu")
    with pytest.warns(RunWarning, match=r"per process \(2 processes, gloo on cpu\)"):
        run = open_run(teacher=None, student=arch, data=data, out=tmp_path / "a", config=cfg)
    run.cleanup()
    assert _bn_counts(run.student)[0] == 0
    # where the plan converts (CUDA + NCCL), the run's student trains with SyncBatchNorm, same keys (DDP itself
    # refuses SyncBatchNorm in a CPU module, so here the student is not wrapped)
    from nas_prune import loop

    monkeypatch.setattr(device, "sync_batch_norm_plan", lambda **kw: (True, None))
    monkeypatch.setattr(loop, "ddp", lambda module, device, **kw: module)
    run = open_run(teacher=None, student=arch, data=data, out=tmp_path / "b", config=cfg)
    run.cleanup()
    assert _bn_counts(run.student)[1] == 0 and _bn_counts(run.student)[0] > 10
    assert run.student.state_dict().keys() == build_spade_generator(arch).state_dict().keys()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sync_batch_norm_trains_like_batch_norm_on_one_gpu():
    """In an NCCL group of one, the converted student's training step equals plain batch norm's."""
    import torch.distributed as dist

    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = build_spade_generator(tiny_spade_arch()).to(CUDA).train()
        copy = build_spade_generator(tiny_spade_arch()).to(CUDA)
        copy.load_state_dict(plain.state_dict())
        synced, _ = sync_batch_norms(copy, world=2, device=CUDA)  # backend read from the group
        assert _bn_counts(synced)[0] > 10
        synced.train()
        seg = torch.rand(2, 6, 64, 64, device=CUDA)
        a, b = plain(seg), synced(seg)
        a.square().mean().backward()
        b.square().mean().backward()
        assert torch.allclose(a, b, atol=1e-5)
        for (k, p), q in zip(plain.named_parameters(), synced.parameters()):
            assert torch.allclose(p.grad, q.grad, atol=1e-5), k
        for (k, v), w in zip(plain.state_dict().items(), synced.state_dict().values()):
            assert torch.allclose(v.float(), w.float(), atol=1e-5), k  # running statistics updated alike
    finally:
        dist.destroy_process_group()
