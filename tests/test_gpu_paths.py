"""The GPU paths of distillation: AMP, channels_last, torch.compile, exact resume, DDP under
torchrun, Inception on CUDA, every method under bf16, no host sync in the step.

CUDA cases carry the ``gpu`` marker (deselected by default; ``pytest -m gpu`` on a CUDA machine,
or ``results/gpu/check.sh``) and are skipped, with the reason, where CUDA is missing. Each has a
CPU twin in the default suite where the same logic can run on a CPU.

Tolerances (outputs are tanh images in [-1, 1]):

- bf16 vs fp32 student outputs: mean |diff| <= 0.02, max <= 0.15. bf16 keeps 8 significant
  bits (rounding 2^-9 = 0.2% per op); through the ~12 conv/norm layers of the tiny student the
  CPU gives mean 0.005 and max 0.035-0.05 (3 seeds), so the bounds leave 3-4x headroom, while
  two students of different seeds differ by ~0.2 on average.
- channels_last vs contiguous, compiled vs eager (fp32, TF32 off): |diff| <= 1e-4. Both only
  reorder fp32 sums (other conv algorithms, fused norms); the CPU gives 2e-6 (channels_last)
  and 2.4e-6 (inductor).
- exact resume: bitwise equality, with ``deterministic=True`` on CUDA (deterministic algorithms,
  cuDNN autotuning off, CUBLAS_WORKSPACE_CONFIG=:4096:8; see nas_prune.device.set_determinism).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas_prune.arch import Arch, Block
from nas_prune.demo_data import make_demo_dataset
from nas_prune.distill import DistillConfig, distill, open_run
from nas_prune.errors import NasPruneError
from nas_prune.model import build_generator

HAS_CUDA = torch.cuda.is_available()
NO_CUDA = "needs a CUDA device: run with -m gpu on a GPU machine (results/gpu/check.sh)"
CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA)], id="cuda")
DEVICES = ["cpu", CUDA]
METHODS = ("gcka", "mse", "crd", "akdg", "ackd")

T_ARCH = Arch(input_nc=3, output_nc=3, stem=(8, 16, 16), blocks=tuple(Block(res=(4, 4, 4), dw=(4, 4, 4)) for _ in range(3)),
              head=(16, 8), dropout=0.2)  # dropout: resume exactness depends on the (CUDA) RNG state
S_ARCH = T_ARCH.with_widths(stem=(4, 8, 16), blocks=[Block(res=(2, 0, 2), dw=(0, 2, 2))] * 3, head=(8, 4))
FAST = dict(mode="aligned", epochs=1, epochs_decay=1, batch_size=4, load_size=36, crop_size=32, workers=0, ndf=8,
            progress=False, log_every=1, eval_every=10**6, save_every=10**6, grid_every=10**6)
pytestmark = pytest.mark.filterwarnings("ignore:the student has no weights", "ignore:.*no test split")


def gpu_only():
    return [pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), size=32, n_train=8, n_test=4, seed=0)


@pytest.fixture
def no_tf32():
    """fp32 comparisons on CUDA: TF32 convs/matmuls (cuDNN's default on Ampere+) round to 10 bits."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def teacher():
    torch.manual_seed(0)
    return build_generator(T_ARCH).eval()


def student(seed: int = 1):
    torch.manual_seed(seed)
    return build_generator(S_ARCH)


def steps(run, n: int) -> list[dict]:
    """``n`` training steps of a run from :func:`open_run`, on its first batches; the step values."""
    out = []
    while len(out) < n:
        run.sampler.epoch, run.sampler.start_batch = divmod(run.step, run.steps_per_epoch)
        for batch in run.loader:
            out.append(run.train_step(batch))
            run.step += 1
            if len(out) == n:
                break
    return out


def images(device: str) -> torch.Tensor:
    """Four seeded 32x32 RGB inputs in [-1, 1] on ``device``."""
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1


def make_run(tmp_path, data, device, **kw):
    return open_run(teacher=teacher(), student=student(), data=data, out=tmp_path / "run",
                    config=DistillConfig(**{**FAST, "device": device, **kw}))


def numbers(values: dict) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()}


# ----------------------------------------------------------------------------- AMP


@pytest.mark.parametrize("device,amp", [("cpu", "none"), ("cpu", "bf16"), pytest.param("cuda", "none", marks=gpu_only()),
                                        pytest.param("cuda", "bf16", marks=gpu_only()), pytest.param("cuda", "fp16", marks=gpu_only())])
def test_one_step_per_amp_mode_has_finite_losses(tmp_path, data, device, amp):
    run = make_run(tmp_path, data, device, amp=amp)
    try:
        values = steps(run, 2)
        dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        assert run.amp_dtype == dtype
        for v in values:
            assert set(v) == {"d", "g_gan", "recon", "kd_gcka", "g_total"}
            assert all(t.device.type == device and t.dim() == 0 for t in v.values())
            got = numbers(v)
            assert all(torch.isfinite(torch.tensor(x)) for x in got.values()), got
            assert -4.0 <= got["kd_gcka"] < 0  # -sum of 4 alignments
        assert run.monitor.first_bad() is None
    finally:
        run.cleanup()


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_student_outputs_close_to_fp32(tmp_path, data, device, no_tf32):
    """Same weights, autocast bf16 vs fp32; and one training step in each mode from the same start."""
    x = images(device)
    s = student().to(device).eval()
    with torch.no_grad():
        y32 = s(x)
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            y16 = s(x).float()
        other = student(seed=7).to(device).eval()(x)
    diff = (y32 - y16).abs()
    assert diff.mean() <= 0.02 and diff.max() <= 0.15, (diff.mean().item(), diff.max().item())
    assert (y32 - other).abs().mean() > 0.05  # the bound separates different students

    trained = {}
    for amp in ("none", "bf16"):
        res = distill(teacher=teacher(), student=student(), data=data, out=tmp_path / amp,
                      config=DistillConfig(**{**FAST, "device": device, "amp": amp, "max_steps": 1}))
        with torch.no_grad():
            trained[amp] = res.student.to(device)(x)
    diff = (trained["none"] - trained["bf16"]).abs()
    assert diff.mean() <= 0.02 and diff.max() <= 0.15, (diff.mean().item(), diff.max().item())


# ----------------------------------------------------------------------------- memory format, compile


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_matches_contiguous(tmp_path, data, device, no_tf32):
    x = images(device)
    s = student().to(device).eval()
    with torch.no_grad():
        y = s(x)
        s = s.to(memory_format=torch.channels_last)
        y_cl = s(x.contiguous(memory_format=torch.channels_last))
    assert s.down_sampling[1].weight.is_contiguous(memory_format=torch.channels_last)
    assert (y - y_cl).abs().max() <= 1e-4
    # a training step in each format: the first step's losses (same weights, same batch) agree
    first = {}
    for cl in (False, True):
        run = open_run(teacher=teacher(), student=student(), data=data, out=tmp_path / f"cl{cl}",
                       config=DistillConfig(**{**FAST, "device": device, "amp": "none", "channels_last": cl}))
        try:
            first[cl] = numbers(steps(run, 1)[0])
        finally:
            run.cleanup()
    for k, v in first[False].items():
        assert first[True][k] == pytest.approx(v, rel=1e-4, abs=1e-5), k


@pytest.mark.parametrize("device", [pytest.param("cpu", marks=pytest.mark.slow), CUDA])
def test_compiled_student_matches_eager(tmp_path, data, device, no_tf32):
    """Inductor on CPU compiles C++ for about a minute on 2 cores: the CPU twin is a slow test."""
    x = images(device)
    s = student().to(device).eval()
    compiled = torch.compile(s)
    with torch.no_grad():
        assert (s(x) - compiled(x)).abs().max() <= 1e-4
    res = distill(teacher=teacher(), student=student(), data=data, out=tmp_path / "run",
                  config=DistillConfig(**{**FAST, "device": device, "compile": True, "max_steps": 2}))
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs if "step" in r and "g_total" in r] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["g_total"])) for r in logs if "g_total" in r)
    assert res.step == 2


# ----------------------------------------------------------------------------- resume, determinism


@pytest.mark.parametrize("device", DEVICES)
def test_kill_and_resume_continues_exactly(tmp_path, data, device):
    """As tests/test_distill.py's CPU test, with ``deterministic=True`` (needed on CUDA)."""
    cfg = DistillConfig(**{**FAST, "epochs": 2, "epochs_decay": 1, "device": device, "deterministic": True})  # 6 steps
    flags = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    whole = distill(teacher=teacher(), student=student(), data=data, out=tmp_path / "a", config=cfg)
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark) == flags  # restored

    def kill_at_3(step, losses):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.warns(UserWarning, match="interrupted at step 3"):
        distill(teacher=teacher(), student=student(), data=data, out=tmp_path / "b", config=cfg, on_step=kill_at_3)
    rest = distill(teacher=teacher(), student=student(), data=data, out=tmp_path / "b", resume=True)
    assert rest.step == 6 and rest.finished
    a, b = whole.student.state_dict(), rest.student.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    da = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    db = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(da["discriminator"][k], db["discriminator"][k]) for k in da["discriminator"])
    info = json.loads((tmp_path / "a" / "config.json").read_text())["determinism"]
    assert info["deterministic"] and info["use_deterministic_algorithms"] and not info["cudnn_benchmark"]
    assert info["cublas_workspace_config"] in (":4096:8", ":16:8")
    resumed = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert any(r.get("resume") == 3 and r["determinism"]["deterministic"] for r in resumed)


def test_reflect_pad_by_slices_equals_reflection_pad():
    from nas_prune.model import reflect_pad_by_slices

    x = torch.randn(2, 3, 7, 9, requires_grad=True)
    g = torch.randn(2, 3, 13, 15)
    ref = torch.nn.functional.pad(x, (3, 3, 3, 3), mode="reflect")
    (gx_ref,) = torch.autograd.grad(ref, x, g)
    out = reflect_pad_by_slices(x, 3)
    (gx,) = torch.autograd.grad(out, x, g)
    assert torch.equal(out, ref) and torch.allclose(gx, gx_ref, atol=1e-6)


# ----------------------------------------------------------------------------- DDP under torchrun


def _torchrun(nproc: int, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           str(Path(__file__).with_name("ddp_worker.py")), *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("device,nproc,backend", [
    ("cpu", 2, "gloo"),
    pytest.param("cuda", 1, "nccl", marks=gpu_only(), id="cuda-nccl-1"),
    pytest.param("cuda:0", 2, "gloo", marks=gpu_only(), id="cuda-gloo-2-on-one-gpu"),
])
def test_ddp_under_torchrun(tmp_path, device, nproc, backend):
    """Processes stay identical and train as one process on the whole batch would.

    Two processes on half batches average their gradients, which for the per-sample losses of
    tests/ddp_setup.py equals the whole-batch gradient up to float summation order. Adam's first
    steps move each weight by about +-lr whatever the gradient's size, so a weight whose gradient
    is near 0 may move the other way: most weights, not all, agree to 1e-6 (a process training
    alone on its half batch agrees on ~1% of them).
    """
    sys.path.insert(0, str(Path(__file__).parent))
    from ddp_setup import ddp_config, student_and_teacher
    from safetensors.torch import load_file

    data = make_demo_dataset(tmp_path / "data", size=32, n_train=8, n_test=2, seed=0)
    per = 8 // nproc  # one step per epoch: every process sees its share of the 8 images
    done = _torchrun(nproc, data, tmp_path / "ddp", device, backend, per)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [load_file(str(tmp_path / "ddp" / f"rank{r}.safetensors")) for r in range(nproc)]
    for other in ranks[1:]:
        assert all(torch.equal(ranks[0][k], other[k]) for k in ranks[0])
    info = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert info["world_size"] == nproc

    t, s = student_and_teacher()
    distill(teacher=t, student=s, data=data, out=tmp_path / "one", config=ddp_config(batch_size=per * nproc, device=device.split(":")[0]))
    ref = {k: v.detach().cpu() for k, v in s.state_dict().items()}
    close = sum(int(((ref[k] - ranks[0][k]).abs() <= 1e-6).sum()) for k in ref)
    total = sum(v.numel() for v in ref.values())
    assert close / total >= 0.9, close / total


# ----------------------------------------------------------------------------- every method, inference mode


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_steps_under_bf16_with_the_teacher_in_inference_mode(tmp_path, data, device, method):
    options = {"akdg": {"ndf": 8}, "ackd": {"width": 8}}.get(method, {})
    run = make_run(tmp_path, data, device, amp="bf16", distill={method: 1.0}, distill_options={method: options} if options else {})
    seen = []
    hook = run.teacher.down_sampling.register_forward_pre_hook(lambda m, a: seen.append(torch.is_inference_mode_enabled()))
    before = {k: v.clone() for k, v in run.terms[0][1].state_dict().items()}
    try:
        values = [numbers(v) for v in steps(run, 3)]
    finally:
        hook.remove()
        run.cleanup()
    assert seen == [True] * 3
    assert all(p.grad is None for p in run.teacher.parameters())
    for v in values:
        assert all(torch.isfinite(torch.tensor(x)) for x in v.values()), v
        assert f"kd_{method}" in v
    if method == "akdg":
        assert "kd_akdg_d" in values[0]
    after = run.terms[0][1].state_dict()
    if before:  # the methods with parameters of their own trained them
        assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA)
@pytest.mark.parametrize("method", METHODS)
def test_step_does_not_synchronise_with_the_host(tmp_path, data, method):
    """``torch.cuda.set_sync_debug_mode("error")`` raises on any operation that makes the host wait."""
    run = make_run(tmp_path, data, "cuda", amp="bf16", distill={method: 1.0})
    try:
        batches = iter(run.loader)
        run.train_step(next(batches))  # first step: lazy initialisation, cuDNN autotuning
        run.step += 1
        batch = next(batches)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            values = run.train_step(batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert all(torch.isfinite(v) for v in values.values())
    finally:
        run.cleanup()


# ----------------------------------------------------------------------------- host sync on CPU, NaN stop


def test_step_returns_tensors_and_only_logging_converts(tmp_path, data, monkeypatch):
    """The step never converts a tensor to a number; the loop does it on log steps only."""
    from nas_prune import distill as dmod

    calls = {"in_step": [], "host_values": []}
    in_step = [False]
    package = str(Path(dmod.__file__).parent)

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *a, **k):
            caller = sys._getframe(1).f_code.co_filename
            if in_step[0] and caller.startswith(package):  # (torch's own CPU-side counters are no device sync)
                calls["in_step"].append(f"{name} in {caller}")
            return original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapper)

    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        counting(name)
    step, host_values = dmod._Run.train_step, dmod._Run.host_values

    def step_wrapper(self, batch):
        in_step[0] = True
        try:
            values = step(self, batch)
        finally:
            in_step[0] = False
        assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in values.values())
        return values

    def host_wrapper(self, values):
        calls["host_values"].append(self.step)
        return host_values(self, values)

    monkeypatch.setattr(dmod._Run, "train_step", step_wrapper)
    monkeypatch.setattr(dmod._Run, "host_values", host_wrapper)
    seen = []
    cfg = DistillConfig(**{**FAST, "log_every": 3, "epochs": 2, "epochs_decay": 0, "distill": {"gcka": 1.0, "crd": 1.0}})
    distill(teacher=teacher(), student=student(), data=data, out=tmp_path / "run", config=cfg,
            on_step=lambda s, v: seen.append(all(isinstance(x, torch.Tensor) for x in v.values())))
    assert calls["in_step"] == []
    assert calls["host_values"] == [3]  # 4 steps, logged at step 3 only
    assert seen == [True] * 4
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs if "g_total" in r] == [3]


def test_finite_monitor_remembers_the_first_bad_step():
    from nas_prune.device import FiniteMonitor

    m = FiniteMonitor(torch.device("cpu"), start_step=10)
    t = torch.tensor
    m.update({"d": t(0.5), "g": t(1.0)})
    assert m.first_bad() is None
    m.update({"d": t(0.4), "g": t(float("inf"))})  # step 12
    m.update({"d": t(float("nan")), "g": t(2.0)})  # later bad steps do not replace the first
    m.update({"d": t(0.3), "g": t(1.0), "kd_x_d": t(0.1)})  # another set of losses keeps the record
    step, values = m.first_bad()
    assert step == 12 and values["d"] == pytest.approx(0.4) and values["g"] == float("inf") and values["kd_x_d"] == 0


def test_nan_stops_at_the_next_check_and_keeps_the_last_good_checkpoint(tmp_path, data):
    """A NaN at step 3, read at the log step 4: the checkpoint of step 2 stays, with finite weights."""
    from test_distill import _NanAtStep3  # noqa: F401 - registers the "test_nan" term

    cfg = DistillConfig(**{**FAST, "log_every": 4, "save_every": 2, "epochs": 3, "epochs_decay": 0,
                           "distill": {"test_nan": 1.0}})
    with pytest.raises(NasPruneError, match=r"not finite at step 3 \(.*kd_test_nan=nan.*stopped at step 4.*last good checkpoint"):
        distill(teacher=teacher(), student=student(), data=data, out=tmp_path / "nan", config=cfg)
    state = torch.load(tmp_path / "nan" / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["student"].values() if v.is_floating_point())
    assert not (tmp_path / "nan" / "final").exists()


# ----------------------------------------------------------------------------- Inception on CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA)
def test_evaluate_with_inception_on_cuda(tmp_path, data, inception_weights, no_tf32):
    from nas_prune.evaluate import evaluate
    from nas_prune.inception import load_inception

    path, _ = inception_weights
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cpu = load_inception(path, value_range=(-1.0, 1.0), device="cpu")(x)
    gpu = load_inception(path, value_range=(-1.0, 1.0), device="cuda")(x.cuda()).cpu()
    assert torch.allclose(gpu, cpu, rtol=1e-3, atol=1e-4)
    models = {"teacher": teacher(), "student": student().eval()}
    res = {d: evaluate(models={k: m for k, m in models.items()}, data=data, crop_size=32, inception=path, kid_subsets=4,
                       device=d) for d in ("cpu", "cuda")}
    for name in models:
        assert res["cuda"].rows[name]["fid"] == pytest.approx(res["cpu"].rows[name]["fid"], rel=1e-2)
        assert res["cuda"].rows[name]["psnr"] == pytest.approx(res["cpu"].rows[name]["psnr"], rel=1e-4)
