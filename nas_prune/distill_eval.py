"""Evaluation during distillation: test-split metrics, the kept best student, image grids.

Functions of a running :class:`nas_prune.distill._Run` (``run``): they read its models,
data and config and update its history and best metrics.
"""

from __future__ import annotations

from nas_prune.distill_io import save_student, to_uint8_grid

__all__ = ["evaluate", "is_better", "record", "write_grid"]


def evaluate(run) -> None:
    """PSNR / SSIM (and FID if configured) of the student on the test split; keep the best.

    Runs with GauGAN's objective score FID, mIoU and PSNR to the teacher instead
    (:func:`nas_prune.gaugan.run.evaluate`).
    """
    if getattr(run, "objective", None) == "gaugan" and run.is_main and run.test_set is not None:
        from nas_prune.gaugan import run as gaugan_run

        record(run, gaugan_run.evaluate(run))
        return
    if not run.is_main or run.test_set is None:
        if run.is_main and run.test_set is None:
            write_grid(run)
        return
    import torch

    from nas_prune.data import collate
    from nas_prune.metrics import psnr, ssim

    run.student.eval()
    sums: dict[str, float] = {}
    count = 0
    feats_real, feats_fake = [], []
    loader = torch.utils.data.DataLoader(run.test_set, batch_size=run.cfg.batch_size, shuffle=False,
                                         num_workers=0, collate_fn=collate, generator=torch.Generator())
    with torch.no_grad(), run._autocast():
        for batch in loader:
            a, b = run._prep(batch["A"]), run._prep(batch["B"])
            s = run.student(a).float()
            n = a.shape[0]
            pairs = {}
            if run.cfg.mode == "aligned":
                pairs[""] = b
            if run.teacher is not None:
                pairs["_teacher"] = run.teacher(a).float()
            for suffix, ref in pairs.items():
                sums[f"psnr{suffix}"] = sums.get(f"psnr{suffix}", 0.0) + psnr(s, ref.float()) * n
                if min(s.shape[-2:]) >= 11:
                    sums[f"ssim{suffix}"] = sums.get(f"ssim{suffix}", 0.0) + ssim(s, ref.float()) * n
            if run.fid_net is not None:  # full precision, as nas-prune evaluate
                with torch.autocast(device_type=run.device.type, enabled=False):
                    feats_real.append(run.fid_net(b).double().cpu().numpy())
                    feats_fake.append(run.fid_net(s).double().cpu().numpy())
            count += n
    run.student.train()
    metrics = {k: v / count for k, v in sums.items()}
    if feats_real:
        import numpy as np

        from nas_prune.fid import frechet_distance

        metrics["fid"] = frechet_distance(np.concatenate(feats_real), np.concatenate(feats_fake))
    record(run, metrics)


def record(run, metrics: dict[str, float]) -> None:
    """Log one evaluation, keep the best student (``best/``, ``best_metrics.json``), write a grid."""
    rec = {"step": run.step, **metrics}
    run.history.append(rec)
    run._log({"eval": True, **rec})
    if run.writer is not None:
        for k, v in metrics.items():
            run.writer.add_scalar(f"eval/{k}", v, run.step)
    if is_better(run.best, metrics):
        run.best, run.best_step = dict(rec), run.step
        save_student(run.student, run.student_arch, run.out / "best", run.student_doc)
        from nas_prune.fileio import write_json

        write_json(run.out / "best_metrics.json", rec)
    write_grid(run)


def is_better(best: dict[str, float], metrics: dict[str, float]) -> bool:
    """Whether ``metrics`` beat ``best``: higher mIoU, else lower FID, else higher PSNR (to the target, else to the teacher)."""
    if not best:
        return True
    for key, higher in (("miou", True), ("fid", False), ("psnr", True), ("psnr_teacher", True)):
        if key in metrics and key in best:
            return metrics[key] > best[key] if higher else metrics[key] < best[key]
    return True


def write_grid(run) -> None:
    """``samples/step_XXXXXXX.png``: rows of input | teacher | student | real."""
    if not run.is_main:
        return
    if getattr(run, "objective", None) == "gaugan":
        from nas_prune.gaugan import run as gaugan_run

        return gaugan_run.write_grid(run)
    import torch

    from nas_prune.data import collate

    if run.grid_batch is None:
        source = run.test_set if run.test_set is not None else run.train_set
        n = min(run.cfg.grid_images, len(source))
        items = [source[i] if run.test_set is not None else source[(0, i)] for i in range(n)]
        run.grid_batch = collate(items)
    a = run._prep(run.grid_batch["A"])
    run.student.eval()
    with torch.no_grad():
        s = run.student(a)
        t = run.teacher(a) if run.teacher is not None else None
    run.student.train()
    rows = []
    for i in range(a.shape[0]):
        row = [a[i]]
        if t is not None:
            row.append(t[i])
        row += [s[i], run.grid_batch["B"][i]]
        rows.append([x if x.shape[0] in (1, 3) else x[:3] for x in row])
    folder = run.out / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    to_uint8_grid(rows, folder / f"step_{run.step:07d}.png")
