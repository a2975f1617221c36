"""nas-prune: compress image-to-image GAN generators.

One-step channel pruning of a teacher's inception-residual search space to a MACs
budget, architectures as versioned JSON, Optuna search over candidate students, and
distillation fine-tuning. Heavy modules (torch, fvcore, optuna) are imported by the
stage modules, not here, so ``import nas_prune`` and ``nas-prune --help`` stay fast.
"""

__version__ = "0.1.0"
