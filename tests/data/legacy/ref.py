"""Run with the nas-prune of commit f7064f5 on PYTHONPATH, after make.py (see README.md)."""
import torch
torch.set_num_threads(1)
from safetensors.torch import save_file
from nas_prune.export import load_student
out = {}
g = torch.Generator().manual_seed(1)
x = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
out["inception_input"] = x
out["inception_output"] = load_student("out/inception_student")(x).detach()
seg = torch.zeros(1, 4, 64, 64); lab = torch.randint(0, 3, (1, 1, 8, 8), generator=g).repeat_interleave(8, 2).repeat_interleave(8, 3)
seg.scatter_(1, lab, 1.0)
out["spade_input"] = seg
with torch.no_grad():
    out["spade_output"] = load_student("out/spade_student")(seg).detach()
save_file({k: v.contiguous() for k, v in out.items()}, "out/reference_outputs.safetensors")
print({k: tuple(v.shape) for k, v in out.items()})
