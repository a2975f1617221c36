"""Reference outputs for nas-prune's tests, made with the reference code on random weights.

Not part of the suite and not runnable from the repository alone: it drives pytorch-fid, fyu/drn,
torchvision's model definitions and torch-fidelity in a scratch folder outside the repository,
set up as README.md in this folder says, and writes the safetensors files kept here::

    PYTHONPATH=tv:pytorch-fid/src:drn:site:NAS_PRUNE/tests python make_reference_outputs.py OUT_DIR [inception] [drn] [vgg]
"""

import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

import refnets  # tests/refnets.py of the nas-prune worktree: the weight generator the tests use

torch.set_num_threads(1)
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
which = sys.argv[2:] or ["inception", "drn", "vgg"]

# ------------------------------------------------------------------ FID Inception (pytorch-fid)
if "inception" in which:
    import pytorch_fid.inception as pfi
    from pytorch_fid.fid_score import calculate_frechet_distance
    import torch_fidelity.metric_kid as tfk

    SEED = 2015
    # pt_inception-2015-12-05-6726825d.pth has the key layout of fid_inception_v3()'s network:
    # build that network (pytorch-fid's own classes) to read the keys and shapes, then let
    # InceptionV3 load our random state dict where it would download the file
    captured = {}

    def fake_download(url, progress=True):
        return captured["state"]

    inc = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    inc.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    inc.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    inc.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    inc.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    inc.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    inc.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    inc.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    inc.Mixed_7b = pfi.FIDInceptionE_1(1280)
    inc.Mixed_7c = pfi.FIDInceptionE_2(2048)
    shapes = {k: tuple(v.shape) for k, v in inc.state_dict().items()}
    state = refnets.random_state(shapes, SEED)
    captured["state"] = state
    pfi.load_state_dict_from_url = fake_download
    model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True,
                            normalize_input=True, requires_grad=False, use_fid_inception=True).eval()
    g = torch.Generator().manual_seed(SEED)
    n_per_set = 6
    images = torch.rand(2 * n_per_set, 3, 32, 32, generator=g)
    images[n_per_set:] = images[n_per_set:] * 0.6 + 0.3  # a second, lower-contrast set
    with torch.no_grad():
        feats = model(images)[0].squeeze(-1).squeeze(-1)
    f = feats.double().numpy()
    real, fake = f[:n_per_set], f[n_per_set:]
    mu1, s1 = np.mean(real, axis=0), np.cov(real, rowvar=False)
    mu2, s2 = np.mean(fake, axis=0), np.cov(fake, rowvar=False)
    fid = calculate_frechet_distance(mu1, s1, mu2, s2)
    kid = tfk.kid_features_to_metric(torch.from_numpy(real), torch.from_numpy(fake), kid_subsets=10,
                                     kid_subset_size=n_per_set, rng_seed=0, verbose=False)
    print("inception: features", tuple(feats.shape), "max", float(feats.max()), "mean", float(feats.mean()),
          "fid", fid, "kid", kid)
    save_file({"images": images.contiguous(), "features": feats.contiguous().float(),
               "fid": torch.tensor([fid], dtype=torch.float64),
               "kid": torch.tensor([kid["kernel_inception_distance_mean"]], dtype=torch.float64)},
              str(out / "fid_inception_outputs.safetensors"),
              metadata={"seed": str(SEED), "n_per_set": str(n_per_set),
                        "weights_sha256": refnets.state_digest(state)})

# ------------------------------------------------------------------ DRN-D-105 (fyu/drn DRNSeg)
if "drn" in which:
    import drn as drn_mod
    import segment as seg_mod

    SEED = 105
    CH = (4, 4, 4, 8, 16, 32, 32, 32)  # drn_d_105 is (16, 32, 64, 128, 256, 512, 512, 512); depths unchanged

    def drn_d_105_w8(pretrained=False, **kwargs):
        return drn_mod.DRN(drn_mod.Bottleneck, [1, 1, 3, 4, 23, 3, 1, 1], arch="D", channels=CH, **kwargs)

    drn_mod.drn_d_105_w8 = drn_d_105_w8
    net = seg_mod.DRNSeg("drn_d_105_w8", 19, pretrained=False).eval()
    sd = net.state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    state = refnets.random_state(shapes, SEED, keep={"up.weight": sd["up.weight"]})
    # stored in float16 (half the bytes); the reference runs on the same values upcast to float32
    state16 = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    state32 = {k: v.float() for k, v in state16.items()}
    missing, unexpected = net.load_state_dict(state32, strict=False)
    assert all(k.endswith("num_batches_tracked") for k in missing) and not unexpected, (missing, unexpected)
    g = torch.Generator().manual_seed(SEED)
    pixels = torch.randint(0, 256, (2, 3, 32, 64), generator=g, dtype=torch.uint8)
    # a smooth component so that predictions form regions, as on photos
    ramp = torch.linspace(0, 255, 64).expand(2, 3, 32, 64)
    pixels = ((pixels.float() * 0.5 + ramp * 0.5)).clamp(0, 255).to(torch.uint8)
    import json
    info = json.load(open("drn/datasets/cityscapes/info.json"))
    norm = seg_mod.transforms.Normalize(mean=info["mean"], std=info["std"])
    x = torch.stack([norm(p.float() / 255.0, torch.zeros(1))[0] for p in pixels])
    captured = {}
    net.up.register_forward_hook(lambda m, i, o: captured.__setitem__("scores", o.detach().clone()))
    with torch.no_grad():
        logsm, _ = net(x)
    scores = captured["scores"]
    pred = scores.argmax(1)
    top2 = scores.topk(2, dim=1).values
    margin = float((top2[:, 0] - top2[:, 1]).min())
    # ground truth: the prediction with a third of the pixels relabelled and 5% ignored (255)
    lab = pred.clone()
    flip = torch.rand(pred.shape, generator=g) < 0.33
    lab[flip] = torch.randint(0, 19, (int(flip.sum()),), generator=g)
    lab[torch.rand(pred.shape, generator=g) < 0.05] = 255
    hist = np.zeros((19, 19))
    for p, t in zip(pred.numpy(), lab.numpy()):
        hist += seg_mod.fast_hist(p.flatten(), t.flatten(), 19)
    with np.errstate(divide="ignore", invalid="ignore"):
        ious = seg_mod.per_class_iu(hist)
    miou = float(np.nanmean(ious) * 100)
    print("drn: params", sum(v.numel() for v in state16.values()), "scores", tuple(scores.shape), "max|s|",
          float(scores.abs().max()), "classes predicted", len(pred.unique()), "min top-2 margin", margin, "miou", miou,
          "rounded as fyu/drn prints", round(miou, 2))
    save_file(state16, str(out / "drn_d_105_narrow.safetensors"))
    save_file({"pixels": pixels.contiguous(), "scores": scores.contiguous(),
               "labels": lab.to(torch.uint8).contiguous(), "miou": torch.tensor([miou], dtype=torch.float64)},
              str(out / "drn_d_105_narrow_outputs.safetensors"),
              metadata={"seed": str(SEED), "channels": ",".join(map(str, CH)), "min_top2_margin": repr(margin),
                        "normalize_mean": json.dumps(info["mean"]), "normalize_std": json.dumps(info["std"])})

# ------------------------------------------------------------------ VGG19 (torchvision)
if "vgg" in which:
    import torchvision.models.vgg as tvvgg

    SEED = 19
    W = 8  # every width / 8: 64 -> 8, 128 -> 16, 256 -> 32, 512 -> 64
    cfg = [v if v == "M" else v // W for v in tvvgg.cfgs["E"]]
    features = tvvgg.make_layers(cfg, batch_norm=False)
    sd = features.state_dict()
    shapes = {f"features.{k}": tuple(v.shape) for k, v in sd.items()}
    state = refnets.random_state(shapes, SEED)
    state16 = {k: v.half() for k, v in state.items()}
    features.load_state_dict({k.removeprefix("features."): v.float() for k, v in state16.items()})
    features.eval()
    g = torch.Generator().manual_seed(SEED)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1  # generator outputs in [-1, 1], as GauGAN's VGGLoss feeds them
    taps = {1: "relu1_1", 6: "relu2_1", 11: "relu3_1", 20: "relu4_1", 29: "relu5_1"}  # SPADE's VGG19 slices
    outs = {}
    h = x
    with torch.no_grad():
        for i, layer in enumerate(features):
            h = layer(h)
            if i in taps:
                outs[taps[i]] = h.clone()
    print("vgg: params", sum(v.numel() for v in state16.values()), {k: (tuple(v.shape), float(v.max())) for k, v in outs.items()})
    save_file(state16, str(out / "vgg19_narrow.safetensors"))
    save_file({"input": x.contiguous(), **{k: v.contiguous() for k, v in outs.items()}},
              str(out / "vgg19_narrow_outputs.safetensors"), metadata={"seed": str(SEED), "width_divisor": str(W)})
