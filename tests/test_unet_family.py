"""The U-Net family (pix2pix's UnetGenerator): fidelity, layout, MACs, pruning, taps, space."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file

from nas_prune.errors import NasPruneError
from nas_prune.families.unet import UnetArch, UnetFamily
from nas_prune.families.unet.arch import teacher_arch
from nas_prune.families.unet.load import detect_layout
from nas_prune.families.unet.plan import masked_teacher_state

DATA = Path(__file__).parent / "data" / "unet"
SPACES = Path(__file__).parent.parent / "search_spaces"
FAM = UnetFamily()
#: The reference outputs were made on this machine's torch build; another CPU's kernels may
#: round differently. Observed: max |diff| 0.0 for all three cases.
REF_TOL = 1e-5


def random_unet(rng: random.Random, *, norm=None, affine=None, stats=None, max_width=12, levels=None) -> UnetArch:
    """A random small U-Net student: 2..6 levels, random per-level widths, random norm."""
    n = levels or rng.randint(2, 6)
    norm = norm or rng.choice(["batch", "instance"])
    affine = rng.random() < 0.6 if affine is None else affine
    stats = True if norm == "batch" else (rng.random() < 0.5 if stats is None else stats)
    return UnetArch(
        input_nc=rng.choice([1, 3]), output_nc=rng.choice([1, 2, 3]),
        down=tuple(rng.randint(1, max_width) for _ in range(n)),
        up=tuple(rng.randint(1, max_width) for _ in range(n - 1)),
        norm=norm, affine=affine, track_running_stats=stats,
        dropout_levels=tuple(i for i in range(1, n - 1) if rng.random() < 0.3),
    )


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Random weights, gammas, betas and running statistics (so no channel is like another)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var") or (t.ndim == 1 and name.endswith("weight")):
                t.copy_(torch.rand(t.shape, generator=g) * 1.5 + 0.25)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * (0.3 if t.ndim == 1 else 0.2))


def load_ref(name: str):
    sd = load_file(str(DATA / f"{name}.safetensors"))
    io = load_file(str(DATA / f"{name}_io.safetensors"))
    return sd, io["input"].float(), io["output"]


# ---------------------------------------------------------------- fidelity
@pytest.mark.parametrize("name, levels, norm, affine, stats", [
    ("unet256_batch_dropout", 8, "batch", True, True),
    ("unet128_instance", 7, "instance", False, False),
    ("unet64_instance_affine_stats", 6, "instance", True, True),
])
def test_reference_outputs_of_pix2pix_unet(name, levels, norm, affine, stats):
    sd, x, y_ref = load_ref(name)
    assert FAM.detect_layout(list(sd)) == "pix2pix-unet"
    notes: list[str] = []
    arch, state = FAM.load_state(sd, path=name, layout="pix2pix-unet", space=None, like=None, notes=notes)
    assert (arch.num_downs, arch.norm, arch.affine, arch.track_running_stats) == (levels, norm, affine, stats)
    assert arch.down == teacher_arch(ngf=4, num_downs=levels).down
    assert any("dropout assumed" in n for n in notes)
    model = FAM.build(arch)
    assert set(model.state_dict()) == set(sd)  # the same keys as pix2pix's module (safetensors sorts them)
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert y.shape == y_ref.shape
    assert (y - y_ref).abs().max().item() <= REF_TOL


def test_dropout_from_the_space_and_its_effect_in_training():
    sd, x, _ = load_ref("unet256_batch_dropout")
    space = SimpleNamespace(name="s", teacher_arch=lambda: teacher_arch(ngf=4, num_downs=8, output_nc=1, dropout=False))
    notes: list[str] = []
    arch, _ = FAM.load_state(sd, path="p", layout="pix2pix-unet", space=space, like=None, notes=notes)
    assert arch.dropout_levels == () and not any("dropout" in n for n in notes) and arch.space == "s"
    with_drop = FAM.build(teacher_arch(ngf=4, num_downs=6))
    drops = [m for m in with_drop.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(drops) == 1 and drops[0].p == 0.5  # level 4 of 6: the 8ngf middle levels 4 .. n-2
    torch.manual_seed(0)
    xx = torch.randn(2, 3, 64, 64)
    with_drop.train()
    a, b = with_drop(xx), with_drop(xx)
    assert not torch.equal(a, b)
    with_drop.eval()
    assert torch.equal(with_drop(xx), with_drop(xx))


def test_teacher_numbers_at_ngf64_256():
    t = teacher_arch(ngf=64, num_downs=8)
    fv = sum(c.macs for c in FAM.layer_costs(t, (256, 256), "fvcore"))
    paper = sum(c.macs for c in FAM.layer_costs(t, (256, 256), "paper"))
    params = FAM.count_params(t)
    # fvcore / torchprofile of pix2pix's own UnetGenerator(3, 3, 8, 64), measured in the scratch folder
    assert (params, fv, paper) == (54_413_955, 6_054_125_568, 18_143_334_400)
    assert params == sum(p.numel() for p in FAM.build(t).parameters())


# ---------------------------------------------------------------- layout
def test_layout_detection_claims_unet_keys_only():
    unet = list(FAM.build(teacher_arch(ngf=2, num_downs=5)).state_dict())
    assert detect_layout(unet) == "pix2pix-unet"
    resnet = ["model.1.weight", "model.2.weight", "model.10.conv_block.1.weight", "model.10.conv_block.5.weight"]
    cat = ["down_sampling.1.weight", "features.0.res_ops.1.1.0.weight", "up_sampling.0.weight"]
    spade = ["fc.weight", "head_0.res_ops.0.0.weight", "conv_img.weight"]
    for keys in (resnet, cat, spade, unet[1:], unet + ["model.1.weight"]):
        assert detect_layout(keys) is None


def test_load_state_errors_name_the_keys():
    sd, _, _ = load_ref("unet128_instance")
    kw = dict(path="t.pth", layout="pix2pix-unet", space=None, like=None, notes=[])
    broken = dict(sd)
    key = "model.model.1.model.5.weight"
    del broken[key]
    with pytest.raises(NasPruneError, match=r"t\.pth: .*missing key model\.model\.1\.model\.5\.weight"):
        FAM.load_state(broken, **kw)
    bad = dict(sd)
    k = "model.model.1.model.3.model.1.weight"  # level 2's down conv reads level 1's 8 channels
    bad[k] = torch.zeros(16, 7, 4, 4)
    with pytest.raises(NasPruneError, match=r"shape mismatch: model\.model\.1\.model\.3\.model\.1\.weight"):
        FAM.load_state(bad, **kw)
    extra = dict(sd, **{"model.model.1.model.9.weight": torch.zeros(1)})
    with pytest.raises(NasPruneError, match=r"unexpected keys: model\.model\.1\.model\.9\.weight"):
        FAM.load_state(extra, **kw)
    small = teacher_arch(ngf=2, num_downs=7, norm="instance", affine=False, track_running_stats=False)
    space = SimpleNamespace(name="tiny", teacher_arch=lambda: small)
    with pytest.raises(NasPruneError, match="not in search space tiny: down.0 has 4 channels"):
        FAM.load_state(sd, **dict(kw, space=space))


def test_old_instance_norm_running_stats_are_dropped():
    arch = teacher_arch(ngf=2, num_downs=5, norm="instance", affine=False, track_running_stats=False)
    sd = FAM.build(arch).state_dict()
    old = dict(sd)
    for k in [k for k in sd if k.endswith(".bias")]:
        prefix = k[: -len(".bias")]
        w = sd[prefix + ".weight"]
        nxt = prefix.rsplit(".", 1)
        norm_key = f"{nxt[0]}.{int(nxt[1]) + 1}"
        if f"{norm_key}.weight" not in sd and norm_key.endswith(".6"):
            old[f"{norm_key}.running_mean"] = torch.zeros(w.shape[1])
            old[f"{norm_key}.running_var"] = torch.ones(w.shape[1])
    innermost_norm = "model.model.1.model.3.model.3.model.3.model.4"
    old[f"{innermost_norm}.running_mean"] = torch.zeros(16)
    old[f"{innermost_norm}.running_var"] = torch.ones(16)
    notes: list[str] = []
    got, state = FAM.load_state(old, path="p", layout="pix2pix-unet", space=None, like=None, notes=notes)
    assert not got.track_running_stats and set(state) == set(sd)
    assert any("PyTorch < 0.4" in n for n in notes)


# ---------------------------------------------------------------- arch JSON
def test_arch_json_round_trip_and_field_errors():
    a = teacher_arch(ngf=8, num_downs=6, norm="instance", affine=True, track_running_stats=True, space="x")
    d = FAM.arch_to_dict(a)
    assert d["family"] == "unet" and FAM.arch_from_dict(d) == a
    assert "6 levels" in FAM.describe(a)
    for change, msg in [
        ({"down": [8, 16]}, r"arch\.up: expected 1 widths"),
        ({"norm": "group"}, r"arch\.norm: expected one of batch, instance"),
        ({"dropout_levels": [5]}, r"arch\.dropout_levels: level 5 is not a middle level"),
        ({"affine": 1}, r"arch\.affine: expected true or false"),
        ({"down": [8, 16, 0, 8, 8, 8]}, r"arch\.down: every width must be >= 1"),
        ({"colour": 1}, r"arch\.colour: unknown field"),
        ({"family": "spade"}, r"arch\.family: expected 'unet'"),
    ]:
        with pytest.raises(NasPruneError, match=msg):
            FAM.arch_from_dict({**d, **change})
    d2 = dict(d)
    del d2["up"]
    with pytest.raises(NasPruneError, match=r"arch\.up: missing field"):
        FAM.arch_from_dict(d2)
    with pytest.raises(NasPruneError, match="batch norm keeps running statistics"):
        teacher_arch(ngf=4, norm="batch", track_running_stats=False)
    assert FAM.fits_within(a, a) is None
    smaller = FAM.arch_from_widths(a, {**FAM.student_widths(a, a), "up.2": 3})
    assert FAM.fits_within(smaller, a) is None
    assert "up.2 has 16 channels" in FAM.fits_within(a, smaller)
    assert "norm is 'batch'" in FAM.fits_within(teacher_arch(ngf=8, num_downs=6), a)


# ---------------------------------------------------------------- MACs
def _fvcore(model, x):
    from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    f = FlopCountAnalysis(model, x)
    f.unsupported_ops_warnings(False)
    f.uncalled_modules_warnings(False)
    return f.total()


def test_macs_equal_fvcore_and_torchprofile_on_32_random_students():
    import warnings

    from torchprofile import profile_macs

    rng = random.Random(19)
    for k in range(32):
        arch = random_unet(rng)
        m = arch.size_multiple
        size = (m * rng.randint(1, max(1, 64 // m)), m * rng.randint(1, max(1, 64 // m)))
        model = FAM.build(arch).eval()
        x = torch.randn(1, arch.input_nc, *size)
        fv = sum(c.macs for c in FAM.layer_costs(arch, size, "fvcore"))
        paper = sum(c.macs for c in FAM.layer_costs(arch, size, "paper"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert fv == _fvcore(model, x), (k, arch, size)
            assert paper == profile_macs(model, x), (k, arch, size)
        assert FAM.count_params(arch) == sum(p.numel() for p in model.parameters())
        teacher = UnetArch(arch.input_nc, arch.output_nc, tuple(w + rng.randint(0, 3) for w in arch.down),
                           tuple(w + rng.randint(0, 3) for w in arch.up), arch.norm, arch.affine,
                           arch.track_running_stats, arch.dropout_levels)
        for conv, total in (("fvcore", fv), ("paper", paper)):
            formula = FAM.macs_formula(teacher, input_size=size, convention=conv)
            assert formula(FAM.student_widths(arch, teacher)) == total


def test_macs_formula_is_non_decreasing_in_every_width():
    rng = random.Random(3)
    t = teacher_arch(ngf=8, num_downs=6)
    formula = FAM.macs_formula(t, input_size=(64, 64), convention="paper")
    layers = FAM.prunable_layers(t)
    assert [l.name for l in layers] == [*(f"down.{i}" for i in range(6)), *(f"up.{i}" for i in (5, 4, 3, 2, 1))]
    assert all(l.has_floor for l in layers)
    for _ in range(20):
        w = {l.name: rng.randint(1, l.width) for l in layers}
        for l in layers:
            if w[l.name] < l.width:
                assert formula({**w, l.name: w[l.name] + 1}) > formula(w)


# ---------------------------------------------------------------- pruning
def _random_plan(rng: random.Random, teacher: UnetArch, keep_all=False):
    kept = {}
    for layer in FAM.prunable_layers(teacher):
        k = layer.width if keep_all else rng.randint(1, layer.width)
        kept[layer.name] = tuple(sorted(rng.sample(range(layer.width), k)))
    return SimpleNamespace(teacher=teacher, kept=kept)


@pytest.mark.parametrize("norm, affine, stats", [("batch", True, True), ("instance", False, False),
                                                 ("instance", True, True), ("batch", False, True)])
def test_slicing_equals_the_masked_teacher(norm, affine, stats):
    rng = random.Random(hash((norm, affine, stats)) % 1000)
    teacher = teacher_arch(ngf=4, num_downs=5, norm=norm, affine=affine, track_running_stats=stats)
    t_model = FAM.build(teacher)
    randomise(t_model, 5)
    t_model.eval()
    t_sd = t_model.state_dict()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    full = _random_plan(rng, teacher, keep_all=True)
    same = FAM.slice_state_dict(full, t_sd)
    assert list(same) == list(t_sd) and all(torch.equal(same[k], t_sd[k]) for k in t_sd)
    for _ in range(3):
        plan = _random_plan(rng, teacher)
        student = FAM.arch_from_widths(teacher, {k: len(v) for k, v in plan.kept.items()})
        s_model = FAM.build(student)
        s_model.load_state_dict(FAM.slice_state_dict(plan, t_sd), strict=True)
        s_model.eval()
        masked = FAM.build(teacher)
        masked.load_state_dict(masked_teacher_state(plan, t_sd), strict=True)
        masked.eval()
        with torch.no_grad():  # float64: only the summation order differs
            ys, ym, yt = s_model.double()(x.double()), masked.double()(x.double()), t_model(x)
        assert (ys - ym).abs().max().item() < 1e-12
        assert (ys.float() - yt).abs().max().item() > 1e-3  # the pruning did change the output


def test_slicing_keeps_each_half_of_the_concatenation():
    teacher = teacher_arch(ngf=2, num_downs=3, norm="instance", affine=True, track_running_stats=False)
    sd = FAM.build(teacher).state_dict()
    plan = SimpleNamespace(teacher=teacher, kept={"down.0": (1,), "down.1": (0, 3), "down.2": (2, 5, 7),
                                                  "up.1": (1,), "up.2": (0, 2)})
    out = FAM.slice_state_dict(plan, sd)
    # level 0's ConvT reads cat([x_1 (down.0: 2 ch), up_1 (up.1: 2 ch)]): rows 1 and 2 + 1
    assert torch.equal(out["model.model.3.weight"], sd["model.model.3.weight"][[1, 3]])
    # level 1's ConvT reads cat([x_2 (down.1: 4 ch), up_2 (up.2: 4 ch)]) and writes up.1
    w = sd["model.model.1.model.5.weight"][[0, 3, 4 + 0, 4 + 2]][:, [1]]
    assert torch.equal(out["model.model.1.model.5.weight"], w)
    # the innermost ConvT reads down.2 only; level 2's conv reads down.1's kept channels
    assert torch.equal(out["model.model.1.model.3.model.3.weight"],
                       sd["model.model.1.model.3.model.3.weight"][[2, 5, 7]][:, [0, 2]])
    assert torch.equal(out["model.model.1.model.3.model.1.weight"],
                       sd["model.model.1.model.3.model.1.weight"][[2, 5, 7]][:, [0, 3]])
    with pytest.raises(NasPruneError, match="plan: down.1: expected ascending"):
        FAM.slice_state_dict(SimpleNamespace(teacher=teacher, kept={**plan.kept, "down.1": (3, 0)}), sd)
    with pytest.raises(NasPruneError, match="widths: up.1 = 0"):
        FAM.arch_from_widths(teacher, {"down.0": 2, "down.1": 4, "down.2": 8, "up.1": 0, "up.2": 4})


# ---------------------------------------------------------------- importance
def test_importance_gamma_l1_activation():
    teacher = teacher_arch(ngf=4, num_downs=5)
    model = FAM.build(teacher)
    randomise(model, 9)
    sd = model.state_dict()
    assert FAM.default_criterion(teacher) == "gamma"
    scores = FAM.importance("gamma", teacher, sd)
    assert set(scores) == {l.name for l in FAM.prunable_layers(teacher)}
    assert torch.equal(scores["down.1"], sd["model.model.1.model.2.weight"].abs())
    assert torch.equal(scores["up.1"], sd["model.model.1.model.6.weight"].abs())
    gammas = torch.cat([v.abs() for k, v in sd.items() if k.endswith(".weight") and v.ndim == 1])
    w0 = sd["model.model.0.weight"].abs().sum(dim=(1, 2, 3))
    assert torch.allclose(scores["down.0"], w0 / w0.mean() * gammas.mean())
    inner = "model.model.1.model.3.model.3.model.3.model.1.weight"
    wi = sd[inner].abs().sum(dim=(1, 2, 3))
    assert torch.allclose(scores["down.4"], wi / wi.mean() * gammas.mean())
    l1 = FAM.importance("l1", teacher, sd)
    wt = sd["model.model.1.model.5.weight"].abs().sum(dim=(0, 2, 3))  # ConvT: [in, out, k, k]
    assert torch.allclose(l1["up.1"], wt / wt.mean())
    act = FAM.importance("activation", teacher, sd, calib=torch.rand(2, 3, 32, 32) * 2 - 1)
    assert all(v.shape == (l.width,) and torch.isclose(v.mean(), torch.tensor(1.0)) for l in FAM.prunable_layers(teacher)
               for v in [act[l.name]])
    free = teacher_arch(ngf=4, num_downs=5, norm="instance", affine=False, track_running_stats=False)
    assert FAM.default_criterion(free) == "l1"
    with pytest.raises(NasPruneError, match="needs affine norms"):
        FAM.importance("gamma", free, FAM.build(free).state_dict())
    with pytest.raises(NasPruneError, match="unknown importance criterion"):
        FAM.importance("taylor", teacher, sd)


# ---------------------------------------------------------------- taps and sizes
def test_taps_shapes_channels_and_no_in_place_damage():
    rng = random.Random(7)
    arch = random_unet(rng, levels=5, norm="batch")
    model = FAM.build(arch).eval()
    taps = FAM.tap_names(arch)
    assert taps == ["down.0", "down.1", "down.2", "down.3", "down.4", "up.4", "up.3", "up.2", "up.1"]
    assert FAM.default_taps(arch) == ["down.1", "down.3", "up.3", "up.1"]
    assert FAM.default_taps(teacher_arch(ngf=2, num_downs=2)) == ["down.1", "up.1"]
    x = torch.randn(2, arch.input_nc, 64, 96)
    with torch.no_grad():
        out, feats = model.forward_with_features(x, taps)
        assert torch.equal(out, model(x))
    for t in taps:
        kind, i = t.split(".")
        i = int(i)
        side = (64 >> (i + 1), 96 >> (i + 1)) if kind == "down" else (64 >> i, 96 >> i)
        assert feats[t].shape == (2, FAM.tap_channels(arch, t), *side)
        assert (feats[t] < 0).any()  # pre-activation values, not rewritten by the in-place LeakyReLU/ReLU
    with pytest.raises(NasPruneError, match="unknown feature layer 'up.0'"):
        FAM.check_taps(arch, ["up.0"])


def test_input_sizes():
    t = teacher_arch(ngf=2, num_downs=6, norm="instance", affine=True, track_running_stats=False)
    assert FAM.size_multiple(t) == 64 and FAM.min_input_size(t) == (64, 64)
    FAM.check_input_size(t, (64, 128))
    with pytest.raises(NasPruneError, match="needs multiples of 64"):
        FAM.check_input_size(t, (96, 64))
    model = FAM.build(t)
    model.train()  # instance norm without running stats normalises per image: its smallest map is 2x2
    x = torch.randn(1, 3, 64, 64)
    out, feats = model.forward_with_features(x, ["down.5", "up.5"])
    assert out.shape == (1, 3, 64, 64) and feats["down.5"].shape[-2:] == (1, 1)  # no norm at 1x1
    assert feats["up.5"].shape[-2:] == (2, 2)
    bn = FAM.build(teacher_arch(ngf=2, num_downs=6))
    bn.train()
    assert bn(x).shape == (1, 3, 64, 64)  # batch 1: batch norm's smallest map (2x2) has 4 values
    bn.eval()
    assert torch.isfinite(bn(x)).all()
    assert FAM.forward_bytes(t, (64, 64)) > 4 * 6 * 64 * 64


# ---------------------------------------------------------------- space
def test_shipped_space_loads_through_the_family():
    path = SPACES / "unet_256.yaml"
    text = path.read_text()
    assert text.startswith("# ")
    space = FAM.space_from_dict(yaml.safe_load(text), source=str(path))
    assert (space.name, space.family) == ("unet_256", "unet")
    t = space.teacher_arch()
    assert t == teacher_arch(ngf=64, num_downs=8, space="unet_256")
    assert t.dropout_levels == (4, 5, 6) and t.space == "unet_256"
    data = yaml.safe_load(text)
    with pytest.raises(NasPruneError, match=r"unet_256\.yaml: ngff: unknown key"):
        FAM.space_from_dict({**data, "ngff": 3}, source=str(path))
    with pytest.raises(NasPruneError, match="num_downs: a U-Net needs at least 2 levels"):
        FAM.space_from_dict({**data, "num_downs": 1}, source="s")
    with pytest.raises(NasPruneError, match="dropout: missing required key"):
        FAM.space_from_dict({k: v for k, v in data.items() if k != "dropout"}, source="s")


def test_shipped_recipe_uses_the_unet_taps():
    from nas_prune.recipe import load_recipe

    recipe = load_recipe(Path(__file__).parent.parent / "recipes" / "pix2pix_unet.yaml")
    space = FAM.space_from_dict(yaml.safe_load((SPACES / "unet_256.yaml").read_text()), source="unet_256")
    taps = recipe.stages["distill"]["distill_taps"]
    assert list(taps) == FAM.default_taps(space.teacher_arch())
    FAM.check_taps(space.teacher_arch(), taps)


def test_trace_size_scales_fvcore_exactly_and_rows_and_rules():
    arch = random_unet(random.Random(11), levels=4)
    h, w, s = FAM.trace_size(arch, (128, 256), min_side=16)
    assert (h, w, s) == (16, 32, 8)  # multiples of 2**4
    assert (sum(c.macs for c in FAM.layer_costs(arch, (h, w), "fvcore")) * s * s
            == sum(c.macs for c in FAM.layer_costs(arch, (128, 256), "fvcore")))
    assert FAM.trace_size(arch, (48, 48), min_side=32) == (48, 48, 1)
    rows = FAM.table_rows(arch)
    assert rows[0] == ("level 0", f"{arch.down[0]} / {arch.output_nc}", "level0") and len(rows) == 4
    stages = {c.stage for c in FAM.layer_costs(arch, (16, 16), "paper")}
    assert stages == {r[2] for r in rows}
    t = teacher_arch(ngf=8, num_downs=5)
    layer = FAM.prunable_layers(t)[0]
    assert FAM.layer_rule(layer, t, min_channels=16, round_to=None) == (1, 8)  # ngf 8 < 16: the whole width
    assert FAM.layer_rule(FAM.prunable_layers(t)[3], t, min_channels=16, round_to=None) == (1, 16)
    assert FAM.layer_rule(layer, t, min_channels=0, round_to=None) == (1, 1)
    assert FAM.module_types()[0] is type(FAM.build(t))


@pytest.mark.parametrize("norm, affine, stats", [("batch", True, True), ("instance", False, False)])
def test_training_pass_with_taps_backpropagates_everywhere(norm, affine, stats):
    arch = teacher_arch(ngf=2, num_downs=5, norm=norm, affine=affine, track_running_stats=stats)
    model = FAM.build(arch).train()
    out, feats = model.forward_with_features(torch.randn(2, 3, 32, 32), FAM.tap_names(arch))
    (out.square().mean() + sum(f.square().mean() for f in feats.values())).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
