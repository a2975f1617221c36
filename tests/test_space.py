"""Search-space YAML files and Arch JSON are validated strictly."""

from __future__ import annotations


import pytest

from nas_prune.arch import Arch, Block, fits_within
from nas_prune.errors import NasPruneError
from nas_prune.shipped import shipped_dir
from nas_prune.space import load_space

SPACES = sorted(shipped_dir("search_spaces").glob("*.yaml"))


def test_every_shipped_space_loads():
    assert {p.stem for p in SPACES} >= {"cat_inception", "resnet_9blocks"}
    for path in SPACES:
        space = load_space(path)
        teacher = space.teacher_arch()
        assert fits_within(teacher, teacher) is None
        assert Arch.from_dict(teacher.to_dict()) == teacher


def test_cat_teacher_widths():
    t = load_space("cat_inception").teacher_arch()
    assert t.stem == (64, 128, 256) and t.head == (128, 64) and t.n_blocks == 9
    assert t.blocks[0] == Block(res=(42, 42, 42), dw=(42, 42, 42))  # 256 // 6
    assert t.norm == "instance" and t.affine and t.use_bias


def test_classic_resnet_is_a_point_of_the_space():
    t = load_space("resnet_9blocks").teacher_arch()
    assert t.res_kernel_sizes == (3,) and t.dw_kernel_sizes == ()
    assert all(b == Block(res=(256,), dw=()) for b in t.blocks)
    assert not t.affine


def _write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


BASE = """name: t
ngf: 8
n_blocks: 2
res_kernel_sizes: [1, 3]
dw_kernel_sizes: [3]
channels_reduction_factor: 2
norm: instance
affine: true
"""


@pytest.mark.parametrize("extra,field", [
    ("colour: blue\n", "colour: unknown key"),
    ("padding: mirror\n", "padding: 'mirror' is not one of"),
])
def test_bad_fields_are_named(tmp_path, extra, field):
    path = _write(tmp_path, BASE + extra)
    with pytest.raises(NasPruneError) as err:
        load_space(path)
    assert str(path) in str(err.value) and field in str(err.value)


@pytest.mark.parametrize("old,new,field", [
    ("ngf: 8", "ngf: eight", "ngf: expected int"),
    ("ngf: 8", "ngf: 0", "ngf: must be >= 1"),
    ("res_kernel_sizes: [1, 3]", "res_kernel_sizes: [2]", "res_kernel_sizes: kernel sizes must be odd"),
    ("norm: instance", "norm: layer", "norm: 'layer' is not one of"),
    ("affine: true", "affine: 1", "affine: expected bool"),
    ("name: t\n", "", "name: missing required key"),
])
def test_bad_values_are_named(tmp_path, old, new, field):
    path = _write(tmp_path, BASE.replace(old, new))
    with pytest.raises(NasPruneError, match=field):
        load_space(path)


def test_yaml_syntax_error_gives_the_line(tmp_path):
    path = _write(tmp_path, BASE + "res_kernel_sizes: [1, 3\n")
    with pytest.raises(NasPruneError, match="not valid YAML at line"):
        load_space(path)


def test_arch_from_dict_names_the_bad_field(tiny_arch):
    data = tiny_arch.to_dict()
    data["blocks"][1]["res"] = [4, "x", 4]
    with pytest.raises(NasPruneError, match=r"arch\.blocks\[1\]\.res: expected a list of integers"):
        Arch.from_dict(data)
    data = tiny_arch.to_dict()
    data["stem"] = [8, 12]
    with pytest.raises(NasPruneError, match=r"arch\.stem: expected 3 values"):
        Arch.from_dict(data)
    data = tiny_arch.to_dict()
    data["norm"] = "group"
    with pytest.raises(NasPruneError, match=r"arch: norm: 'group' is not one of"):
        Arch.from_dict(data)
    data = tiny_arch.to_dict()
    data["extra"] = 1
    with pytest.raises(NasPruneError, match=r"arch\.extra: unknown field"):
        Arch.from_dict(data)


def test_fits_within_reports_the_wider_layer(tiny_arch):
    wider = tiny_arch.with_widths(blocks=(Block(res=(4, 5, 4), dw=(4, 4, 4)),) * 3)
    assert fits_within(wider, tiny_arch) == "blocks[0].res[1] is 5, wider than the teacher's 4"
    assert fits_within(tiny_arch, wider) is None


def test_shipped_space_of_names_a_shipped_teacher(tiny_arch):
    from nas_prune.space import shipped_space_of

    assert shipped_space_of(load_space("cat_inception").teacher_arch()) == "cat_inception"
    assert shipped_space_of(load_space("resnet_9blocks").teacher_arch()) == "resnet_9blocks"
    assert shipped_space_of(tiny_arch) is None
