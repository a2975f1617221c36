"""One training step of a distillation run: the methods :class:`nas_prune.distill._Run` mixes in.

Per step, with ``A`` the input batch and ``B`` the target (paired) or a batch of the
target domain (unpaired)::

    teacher:  t_out, t_feats = T(A)                     (eval mode, no grad)
    student:  s_out, s_feats = S(A)
    D step:   D minimises gan.d_loss(D(real), D(fake.detach()))
    G step:   S minimises lambda_gan * gan.g_loss(D(fake))
                         + lambda_recon * |s_out - target|_1
                         + sum_w w * term(KDBatch)          (e.g. GCKA: -sum KA)
    term D:   terms with their own discriminator take an Adam step on it

``real`` / ``fake`` are ``cat(A, B)`` / ``cat(A, s_out)`` for the conditional pix2pix
discriminator (aligned data) and ``B`` / ``s_out`` for CycleGAN's (unaligned data).
The L1 target is the real ``B`` for aligned data and the teacher output for
unaligned data, where the student is one generator (G_A) as in CAT.

Host synchronisation: a step never reads a loss on the host. :meth:`StepMixin.train_step`
returns the losses as 0-dim device tensors; a :class:`~nas_prune.device.FiniteMonitor`
records on the device the first step with a non-finite loss, and the loop reads it (and
converts the losses to numbers) only on log steps and before anything is written (a
checkpoint, an evaluation's best student, a grid, the final student). So a NaN stops the
run at most ``log_every - 1`` steps after it appeared (those steps are wasted, never
saved) and the checkpoint on disk is always the last good one. Under ``amp="fp16"``
PyTorch's GradScaler still reads its overflow flag on the host at every optimiser step;
bf16 and fp32 need no scaler and have no such wait. The teacher runs under
``torch.inference_mode`` in the step's AMP dtype; its outputs are copied once into
ordinary tensors (constants to autograd) so every distillation term may use them.
"""

from __future__ import annotations

from nas_prune import loop


class StepMixin:
    """The step of a distillation run. It reads the run's attributes (``cfg``, ``device``,
    ``teacher``/``student``/``disc`` forwards, optimisers, ``scaler``, ``terms``, ``monitor``)
    set up by :meth:`nas_prune.distill._Run.setup`."""

    def _autocast(self):
        import torch

        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None)

    def _prep(self, x):
        import torch

        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def _allreduce_grads(self, params) -> None:
        """Average gradients over processes for parameters outside DDP (the terms' own; the
        student's and the discriminator's are averaged by their DDP wrappers)."""
        import torch.distributed as dist

        if self.world == 1:
            return
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad.div_(self.world)

    def teacher_forward(self, real_a):
        """Teacher output and features under ``torch.inference_mode`` in the step's AMP dtype.

        Returns ``(t_out, t_feats)`` as ordinary tensors without grad (copied out of
        inference mode once), so distillation terms and losses may treat them as constants
        of autograd (inference tensors cannot be saved for backward).
        """
        import torch

        with torch.inference_mode(), self._autocast():
            t_out, t_feats = self.t_forward(real_a)
        return t_out.clone(), {k: v.clone() for k, v in t_feats.items()}

    def train_step(self, batch: dict) -> dict:
        """One discriminator + generator (+ term discriminator) step.

        Returns:
            ``{loss name: 0-dim tensor}`` on the training device, detached; nothing here
            reads a value on the host (see the module docstring). The losses also go into
            ``self.monitor``, which the loop reads on log and save steps.
        """
        if self.objective == "gaugan":
            from nas_prune.gaugan import run as gaugan_run

            return gaugan_run.train_step(self, batch)
        import torch
        import torch.nn.functional as F

        from nas_prune.kd import KDBatch

        cfg = self.cfg
        real_a, real_b = self._prep(batch["A"]), self._prep(batch["B"])
        self.lr = loop.set_lr(cfg, step=self.step, steps_per_epoch=self.steps_per_epoch,
                              optimizers=(self.opt_g, self.opt_d, *self.opt_terms.values()))

        need_teacher = bool(self.terms) or cfg.mode == "unaligned"
        if need_teacher:
            t_out, t_feats = self.teacher_forward(real_a)
        with self._autocast():
            s_out, s_feats = self.s_forward(real_a)
        if not need_teacher:
            t_out, t_feats = s_out.detach(), {}

        def d_input(img):
            return torch.cat([real_a, img], dim=1) if cfg.conditional else img

        # discriminator step
        self.disc.requires_grad_(True)
        with self._autocast():
            d_loss = self.gan.d_loss(self.d_forward(d_input(real_b)), self.d_forward(d_input(s_out.detach())))
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(d_loss).backward()
        self.scaler.step(self.opt_d)

        # generator step
        self.disc.requires_grad_(False)
        with self._autocast():
            g_gan = self.gan.g_loss(self.d_forward(d_input(s_out)))
        target = real_b if cfg.mode == "aligned" else t_out
        recon = F.l1_loss(s_out.float(), target.float())
        kd = KDBatch(real_a=real_a, real_b=real_b if cfg.mode == "aligned" else None, t_out=t_out, s_out=s_out, t_feats=t_feats, s_feats=s_feats)
        losses = {"d": d_loss, "g_gan": g_gan, "recon": recon}
        total = self._add_terms(kd, losses, cfg.lambda_gan * g_gan + cfg.recon_weight * recon)
        losses["g_total"] = total

        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self._allreduce_grads([p for _, t in self.terms for p in t.generator_parameters()])
        self.scaler.step(self.opt_g)

        self._term_discriminator_steps(kd, losses)
        self.scaler.update()
        self.disc.requires_grad_(True)
        values = {k: v.detach() for k, v in losses.items()}
        self.monitor.update(values)
        return values

    def _add_terms(self, kd, losses: dict, total):
        """``total + sum(w * term(kd))`` over the distillation terms; each term's value goes into ``losses``."""
        for w, term in self.terms:
            with self._autocast():  # a term's own layers (adapters, fusion, D_kd) run in the step's dtype
                v = term(kd)
            losses[f"kd_{term.name}"] = v
            total = total + w * v
        return total

    def _term_discriminator_steps(self, kd, losses: dict) -> None:
        """An Adam step on each term's own discriminator (e.g. AKDG's) on the detached batch."""
        if not self.opt_terms:
            return
        det = kd.detached()
        for i, opt in self.opt_terms.items():
            term = self.terms[i][1]
            with self._autocast():
                tl = term.discriminator_loss(det)
            if tl is None:
                continue
            opt.zero_grad(set_to_none=True)
            self.scaler.scale(tl).backward()
            self._allreduce_grads(term.discriminator_parameters())
            self.scaler.step(opt)
            losses[f"kd_{term.name}_d"] = tl

    def host_values(self, values: dict) -> dict[str, float]:
        """The step's losses as numbers (one wait for the device), plus the learning rate."""
        import torch

        numbers = torch.stack([v.float().reshape(()) for v in values.values()]).tolist()
        out = dict(zip(values, numbers))
        out["lr"] = self.lr
        return out

