"""One process of a DDP distillation run, started by ``torchrun`` from tests/test_gpu_paths.py.

Usage: ``torchrun --nproc-per-node N tests/ddp_worker.py DATA OUT DEVICE BACKEND BATCH``. Every
process trains the same seeded student and writes its final weights to ``OUT/rank<r>.safetensors``
so the test can check that DDP kept the processes identical and matches one process on the
whole batch.
"""

from __future__ import annotations

import os
import sys

import torch


def main() -> None:
    from safetensors.torch import save_file

    from nas_prune.distill import distill
    from ddp_setup import ddp_config, student_and_teacher  # tests/ is put on sys.path below

    data, out, device, backend, batch = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    torch.set_num_threads(1)
    teacher, student = student_and_teacher()
    distill(teacher=teacher, student=student, data=data, out=out,
            config=ddp_config(batch_size=batch, device=device, dist_backend=backend))
    state = {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}
    save_file(state, os.path.join(out, f"rank{os.environ.get('RANK', '0')}.safetensors"))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
