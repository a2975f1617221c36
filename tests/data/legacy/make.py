"""Run with the nas-prune of commit f7064f5 on PYTHONPATH (see README.md)."""
import sys, torch
from pathlib import Path
import nas_prune
print(nas_prune.__file__)
from nas_prune.arch import Arch, Block
from nas_prune.model import build_generator
from nas_prune.search import search
from nas_prune.spade import cat_teacher_arch
from nas_prune.spade.model import seeded_weights_
out = Path(sys.argv[1])
g = torch.Generator().manual_seed(0)
arch = Arch(input_nc=3, output_nc=3, stem=(8, 16, 16), head=(16, 8), blocks=(Block(res=(4, 4, 4), dw=(4, 4, 4)),) * 2)
m = build_generator(arch)
with torch.no_grad():
    for t in m.state_dict().values():
        if t.dtype.is_floating_point:
            t.copy_(torch.randn(t.shape, generator=g) * 0.3 + (1.0 if t.dim() == 1 else 0.0))
torch.save(m.state_dict(), out / "inception_teacher.pth")
search(teacher=out / "inception_teacher.pth", target_macs=1_500_000, input_size=32, min_channels=4, out=out / "inception_student")
sp = cat_teacher_arch(ngf=4, label_nc=4, num_upsampling_layers="normal", kernel_sizes=(1, 3), channels_reduction_factor=2, spade_hidden=8)
sm = seeded_weights_(__import__("nas_prune.spade.model", fromlist=["x"]).build_spade_generator(sp), 0)
torch.save(sm.state_dict(), out / "spade_teacher.pth")
from nas_prune.macs import count_macs
t = count_macs(sp, input_size=64)
search(teacher=out / "spade_teacher.pth", target_macs=t // 2, input_size=64, min_channels=2, out=out / "spade_student")
