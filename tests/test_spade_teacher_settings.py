"""A SPADE teacher's settings that its checkpoint cannot show (upsampling, activation) reach every stage:
distillation follows the student's arch.json or --space, and the two must agree."""

from __future__ import annotations

import pytest
import torch
import yaml
from typer.testing import CliRunner

from nas_prune.cli import app
from nas_prune.distill import DistillConfig, open_run
from nas_prune.errors import NasPruneError
from nas_prune.search import search
from seg_helpers import write_label_folder
from test_spade_model import ATOL, reference, space_for

pytestmark = pytest.mark.filterwarnings("ignore:the student has no weights")


@pytest.fixture(scope="module")
def normal(tmp_path_factory):
    """CAT's ``normal`` reference teacher as a plain .pth, its space as YAML (and a copy saying ``more``),
    a student cut from it by ``search --space``, and a label-map dataset."""
    root = tmp_path_factory.mktemp("normal")
    state, seg, ref, meta = reference("normal_leaky")
    torch.save(state, root / "G.pth")
    space = {**space_for(meta).to_dict(), "name": "ref_normal"}
    (root / "normal.yaml").write_text(yaml.safe_dump(space))
    (root / "more.yaml").write_text(yaml.safe_dump({**space, "name": "ref_more", "num_upsampling_layers": "more"}))
    res = search(teacher=root / "G.pth", space=root / "normal.yaml", target_macs="5M", input_size="32x64",
                 min_channels=1, out=root / "student")
    assert res.student_arch.num_upsampling_layers == "normal"
    data = write_label_folder(root / "data", n_train=2, n_test=1, n_labels=int(meta["label_nc"]) - 1)
    return {"root": root, "seg": seg, "ref": ref, "data": data}


def _config() -> DistillConfig:
    return DistillConfig(epochs=1, epochs_decay=0, batch_size=2, crop_size=32, preprocess="resize", workers=0, ndf=4,
                         lambda_vgg=0.0, distill={"gcka": 0.5}, progress=False)


@pytest.mark.parametrize("space", [None, "normal.yaml"])
def test_distill_builds_a_normal_teacher_from_the_student_or_space(normal, tmp_path, space):
    root = normal["root"]
    run = open_run(teacher=root / "G.pth", student=root / "student", data=normal["data"], out=tmp_path / "run",
                   config=_config(), space=root / space if space else None)
    try:
        assert run.teacher_arch.num_upsampling_layers == "normal" and run.teacher_arch.activation == "leaky_relu"
        with torch.no_grad():
            out = run.teacher(normal["seg"])
        assert (out - normal["ref"]["out_eval"]).abs().max().item() <= ATOL  # CAT's class output
    finally:
        run.cleanup()


def test_student_and_space_that_disagree_are_one_line_errors(normal, tmp_path):
    root = normal["root"]
    with pytest.raises(NasPruneError, match=r"num_upsampling_layers is 'normal' in the student's architecture, "
                                            r"'more' in search space 'ref_more'"):
        open_run(teacher=root / "G.pth", student=root / "student", data=normal["data"], out=tmp_path / "a",
                 config=_config(), space=root / "more.yaml")
    cli = CliRunner().invoke(app, ["distill", "--teacher", str(root / "G.pth"), "--student", str(root / "student"),
                                   "--data", str(normal["data"]), "--out", str(tmp_path / "b"), "--space",
                                   str(root / "more.yaml"), "--max-steps", "1", "--lambda-vgg", "0"])
    assert cli.exit_code == 2, cli.output
    lines = [line for line in cli.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "num_upsampling_layers is 'normal'" in lines[0] and "Traceback" not in cli.output
    assert not (tmp_path / "b").exists()


def test_evaluate_and_export_take_space_or_follow_the_student(normal, tmp_path):
    from nas_prune.evaluate import evaluate

    root, data = normal["root"], normal["data"]  # read alone, G.pth is CAT's default 'more' (test_spade_model)
    alone = evaluate(models={"teacher": root / "G.pth"}, data=data, crop_size=32, space=root / "normal.yaml")
    both = evaluate(models={"teacher": root / "G.pth", "student": root / "student"}, data=data, crop_size=32,
                    reference="teacher")
    assert both.rows["teacher"]["macs_fvcore"] == alone.rows["teacher"]["macs_fvcore"]
    assert both.rows["student"]["psnr_ref"] > 0  # the teacher ran, as the reference
    assert any(n.startswith("teacher: num_upsampling_layers 'normal'") and "student" in n for n in both.notes)
    cli = CliRunner().invoke(app, ["export", str(root / "G.pth"), "--out", str(tmp_path / "b.pt"), "--format",
                                   "torchscript", "--input-size", "32x64", "--space", str(root / "normal.yaml"), "--no-check",
                                   "--json"])
    assert cli.exit_code == 0, cli.output
    scripted = torch.jit.load(str(tmp_path / "b.pt"))
    with torch.no_grad():
        assert (scripted(normal["seg"]) - normal["ref"]["out_eval"]).abs().max().item() <= ATOL


def test_search_without_space_says_what_it_assumed(normal, tmp_path):
    cli = CliRunner().invoke(app, ["search", "--teacher", str(normal["root"] / "G.pth"), "--target-macs", "5M",
                                   "--input-size", "64x64", "--min-channels", "1", "--out", str(tmp_path / "s")])
    assert cli.exit_code == 0, cli.output
    said = " ".join(cli.output.split())
    assert "note: num_upsampling_layers not stored in the checkpoint: assumed 'more'" in said
