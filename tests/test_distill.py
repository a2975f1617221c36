"""The distillation loop and ``nas-prune distill`` on tiny models and a tiny real-image dataset."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from nas_prune.arch import Arch, Block
from nas_prune.cli import app
from nas_prune.demo_data import make_demo_dataset
from nas_prune.distill import DistillConfig, distill
from nas_prune.errors import NasPruneError
from nas_prune.kd import DistillTerm, register_term
from nas_prune.model import build_generator

T_ARCH = Arch(
    input_nc=3, output_nc=3, stem=(8, 16, 16), blocks=tuple(Block(res=(4, 4, 4), dw=(4, 4, 4)) for _ in range(3)),
    head=(16, 8), dropout=0.2,  # dropout makes the exact-resume test depend on the RNG state
)
S_ARCH = T_ARCH.with_widths(stem=(4, 8, 16), blocks=[Block(res=(2, 0, 2), dw=(0, 2, 2))] * 3, head=(8, 4))
pytestmark = pytest.mark.filterwarnings("ignore:the student has no weights")

FAST = dict(mode="aligned", epochs=1, epochs_decay=1, batch_size=4, load_size=36, crop_size=32, workers=0,
            ndf=8, progress=False, log_every=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), size=32, n_train=8, n_test=4, seed=0)


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return build_generator(T_ARCH).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory, teacher):
    """The teacher as a checkpoint file and the student as a folder, as users pass them."""
    from safetensors.torch import save_file

    from nas_prune.export import FORMAT, VERSION, write_student

    root = tmp_path_factory.mktemp("files")
    save_file(teacher.state_dict(), str(root / "teacher.safetensors"))
    torch.manual_seed(1)
    write_student(root / "student", document={"format": FORMAT, "version": VERSION, "arch": S_ARCH.to_dict()},
                  state_dict=build_generator(S_ARCH).state_dict())
    return root


def test_short_run_writes_everything(tmp_path, data, teacher):
    out = tmp_path / "run"
    res = distill(teacher=teacher, student=S_ARCH, data=data, out=out, config=DistillConfig(**FAST))
    assert res.step == 4 and res.finished and not res.interrupted
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train = [r for r in logs if "eval" not in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    for r in train:
        for key in ("d", "g_gan", "recon", "kd_gcka", "g_total"):
            assert torch.isfinite(torch.tensor(r[key])), key
        assert -4.0 <= r["kd_gcka"] < 0  # -sum of 4 alignments (stem, block1..3)
    assert [r["lr"] for r in train] == [2e-4, 2e-4, 2e-4, 1e-4]  # constant epoch, then linear decay
    assert set(res.metrics) >= {"psnr", "ssim", "psnr_teacher", "ssim_teacher"}
    assert 0 < res.metrics["psnr"] < 100 and len(res.history) == 2
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 4 and set(state) >= {"student", "discriminator", "opt_g", "opt_d", "rng_cpu"}
    with Image.open(out / "samples" / "step_0000004.png") as im:
        assert im.size == (4 * 32, 4 * 32)  # rows: 4 test images; columns: input | teacher | student | real
    assert list((out / "tb").glob("events.out.tfevents.*"))
    from nas_prune.export import load_student

    final = load_student(out / "final")
    for k, v in final.state_dict().items():
        assert torch.equal(v, res.student.state_dict()[k])
    assert load_student(out / "best").arch == S_ARCH
    assert json.loads((out / "best_metrics.json").read_text())["step"] == res.best_step


def test_data_without_a_test_split_trains_and_skips_evaluation(tmp_path, data, teacher):
    import shutil

    from nas_prune.loop import RunWarning

    train_only = tmp_path / "train_only"
    shutil.copytree(data / "train", train_only / "train")
    with pytest.warns(RunWarning, match="no test split; evaluation is skipped"):
        res = distill(teacher=teacher, student=S_ARCH, data=train_only, out=tmp_path / "run",
                      config=DistillConfig(**{**FAST, "epochs_decay": 0}))
    assert res.finished and res.step == 2 and not res.metrics


def test_resume_after_interruption_is_exact(tmp_path, data, teacher):
    cfg = DistillConfig(**{**FAST, "epochs": 2, "epochs_decay": 1})  # 6 steps
    whole = distill(teacher=teacher, student=S_ARCH, data=data, out=tmp_path / "a", config=cfg)

    def ctrl_c(step, losses):
        if step == 3:  # mid-epoch, like a Ctrl-C
            raise KeyboardInterrupt

    with pytest.warns(UserWarning, match="interrupted at step 3"):
        part = distill(teacher=teacher, student=S_ARCH, data=data, out=tmp_path / "b", config=cfg, on_step=ctrl_c)
    assert part.interrupted and part.step == 3 and not part.finished
    # an unfinished run leaves no final/ student, and says so where its result would be
    from nas_prune.evaluate import open_generator
    from nas_prune.runstate import read_status

    assert not (tmp_path / "b" / "final").exists()
    assert read_status(tmp_path / "b") == {"command": "distill", "state": "interrupted", "step": 3, "end_step": 6,
                                           "outputs": ["final"], "reason": "SIGINT"}
    with pytest.raises(NasPruneError, match=r"was interrupted by SIGINT at step 3 of 6; finish it with nas-prune distill --resume"):
        open_generator(tmp_path / "b" / "final")
    rest = distill(teacher=teacher, student=S_ARCH, data=data, out=tmp_path / "b", resume=True)
    assert rest.step == 6 and rest.finished
    assert read_status(tmp_path / "b")["state"] == "done"
    open_generator(tmp_path / "b" / "final")
    a, b = whole.student.state_dict(), rest.student.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    da = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)["discriminator"]
    db = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)["discriminator"]
    assert all(torch.equal(da[k], db[k]) for k in da)
    # a different seed gives different weights, so the equality above is not vacuous
    other = distill(teacher=teacher, student=S_ARCH, data=data, out=tmp_path / "c", config=cfg.replace(seed=1, epochs=1, epochs_decay=0))
    assert any(not torch.equal(other.student.state_dict()[k], a[k]) for k in a)


@register_term("test_nan")
class _NanAtStep3(DistillTerm):
    """Returns NaN from its third call on (to test the stop)."""

    def __init__(self, *, teacher_arch, student_arch, taps=()):
        super().__init__(teacher_arch=teacher_arch, student_arch=student_arch, taps=())
        self.calls = 0

    def forward(self, batch):
        self.calls += 1
        zero = batch.s_out.mean() * 0
        return zero + (float("nan") if self.calls >= 3 else 0.0)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data, teacher):
    cfg = DistillConfig(**{**FAST, "save_every": 1, "distill": {"test_nan": 1.0}})
    with pytest.raises(NasPruneError, match=r"loss is not finite at step 3 \(kd_test_nan=nan.*last good checkpoint"):
        distill(teacher=teacher, student=S_ARCH, data=data, out=tmp_path / "nan", config=cfg)
    assert torch.load(tmp_path / "nan" / "checkpoints" / "last.pt", weights_only=True)["step"] == 2


def test_unaligned_mode_distils_to_the_teacher(tmp_path, teacher):
    import numpy as np

    rng = np.random.default_rng(0)
    for folder, n in (("trainA", 4), ("trainB", 4), ("testA", 2), ("testB", 2)):
        (tmp_path / "d" / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "d" / folder / f"{i}.png")
    cfg = DistillConfig(**{**FAST, "mode": "unaligned", "epochs_decay": 0, "gan_mode": "hinge"})
    res = distill(teacher=teacher, student=S_ARCH, data=tmp_path / "d", out=tmp_path / "run", config=cfg)
    assert cfg.recon_weight == 5.0 and cfg.disc_norm == "instance" and not cfg.conditional
    assert "psnr" not in res.metrics and res.metrics["psnr_teacher"] > 0


def test_input_errors(tmp_path, data, teacher):
    with pytest.raises(NasPruneError, match="student architecture is not in the teacher's space: stem\\[2\\] is 32"):
        distill(teacher=teacher, student=S_ARCH.with_widths(stem=(4, 8, 32)), data=data, out=tmp_path / "x", config=DistillConfig(**FAST))
    with pytest.raises(NasPruneError, match="batch_size: must be >= 2"):
        DistillConfig(batch_size=1)
    with pytest.raises(NasPruneError, match="amp: 'fp8' is not one of"):
        DistillConfig(amp="fp8")
    with pytest.raises(NasPruneError, match="bogus: unknown"):
        DistillConfig().replace(bogus=1)
    with pytest.raises(NasPruneError, match="fewer than one batch of 16"):
        distill(teacher=teacher, student=S_ARCH, data=data, out=tmp_path / "y", config=DistillConfig(**{**FAST, "batch_size": 16}))
    with pytest.raises(NasPruneError, match="amp fp16 needs a CUDA device"):
        distill(teacher=teacher, student=S_ARCH, data=data, out=tmp_path / "z", config=DistillConfig(**{**FAST, "amp": "fp16", "device": "cpu"}))
    with pytest.raises(NasPruneError, match="nothing to resume"):
        distill(teacher=teacher, student=S_ARCH, data=data, out=tmp_path / "none", resume=True)


def test_resume_checks_the_config(tmp_path, data, teacher):
    cfg = DistillConfig(**{**FAST, "max_steps": 1})
    distill(teacher=teacher, student=S_ARCH, data=data, out=tmp_path / "r", config=cfg)
    with pytest.raises(NasPruneError, match="already holds a run"):
        distill(teacher=teacher, student=S_ARCH, data=data, out=tmp_path / "r", config=cfg)
    with pytest.raises(NasPruneError, match="resume: batch_size is 2, the run .* used 4"):
        distill(teacher=teacher, student=S_ARCH, data=data, out=tmp_path / "r", resume=True, config=cfg.replace(batch_size=2))
    res = distill(teacher=teacher, student=S_ARCH, data=data, out=tmp_path / "r", resume=True, max_steps=2)
    assert res.step == 2


def run_cli(*args):
    result = CliRunner().invoke(app, ["distill", *map(str, args)])
    return result.exit_code, result.output


def test_cli_run_and_errors(tmp_path, data, files):
    base = ["--teacher", files / "teacher.safetensors", "--student", files / "student", "--batch-size", 4,
            "--load-size", 36, "--crop-size", 32, "--workers", 0, "--ndf", 8, "--no-progress"]
    code, out = run_cli(*base, "--data", data, "--mode", "aligned", "--epochs", 1, "--epochs-decay", 0,
                        "--distill", "gcka", "--lambda-distill", 2, "--distill-layers", "stem,block3",
                        "--distill-option", "gcka.centered=true", "--out", tmp_path / "run")
    assert code == 0, out
    assert "psnr" in out and (tmp_path / "run" / "final" / "student.safetensors").is_file()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert saved["distill"] == {"gcka": 2.0} and saved["distill_taps"] == ["stem", "block3"]
    assert saved["distill_options"] == {"gcka": {"centered": True}}

    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    cases = [
        (["--data", tmp_path / "missing", "--mode", "aligned"], "error: data directory not found"),
        (["--data", empty, "--mode", "aligned"], "error: train split"),
        (["--data", data, "--mode", "unaligned"], "error: " + str(data) + " has the aligned layout"),
        (["--data", data], "error: --mode is required"),
        (["--data", data, "--mode", "aligned", "--distill", "gcka,nope"], "error: unknown distillation method 'nope'"),
        (["--data", data, "--mode", "aligned", "--lambda-crd", "1"], "error: --lambda-crd is given but crd is not in --distill"),
    ]
    for extra, message in cases:
        code, out = run_cli(*base, *extra, "--out", tmp_path / "bad")
        assert code == 2, out
        assert message in out and "Traceback" not in out
    code, out = run_cli("--teacher", files / "teacher.safetensors", "--student", files / "student", "--data", data,
                        "--mode", "aligned", "--out", tmp_path / "run")
    assert code == 2 and "already holds a run" in out


@pytest.mark.parametrize("kwargs,message", [
    ({"distill": {"crdd": 1.0}}, "unknown distillation method 'crdd'"),
    ({"distill": {"gcka": 1.0}, "distill_options": {"gcka": {"bogus": 1}}}, "distillation option gcka.bogus: unknown option"),
    ({"distill": {"gcka": 1.0}, "distill_options": {"crd": {}}}, "distill_options.crd: options for a method not in distill"),
    ({"distill": {"gcka": -1.0}}, "distill.gcka: weight must be a number >= 0"),
])
def test_config_rejects_unknown_methods_and_options_up_front(kwargs, message):
    from nas_prune.distill import DistillConfig

    with pytest.raises(NasPruneError, match=message):
        DistillConfig(**kwargs)
