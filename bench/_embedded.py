"""What the benches share (a module, not a bench: benches end with a RESULT line): the embedded default as the demo
trains it. Imported by path: ``python bench/x.py`` puts bench/ first on sys.path."""
EMBEDDED = {
    "data": {"train": "builtin:multidigits/train", "validation": "builtin:multidigits/val"},
    "tasks": {"left": {"type": "classification"}, "right": {"type": "classification"},
              "sum": {"type": "regression", "metric": "r2"}},
    "backbone": {"kind": "builtin", "name": "digits-cnn", "weights": "pretrained"},
    "heads": {"hidden_units": 64},
}
# the demo's base config and resources (4 trials at once on 2 cores)
DEMO_TRAIN = {"epochs": 6, "batch_size": 128, "optimizer": "adam", "backbone_lr": 0.001, "head_lr": 0.003,
              "freeze_depth": 0, "loss_weighting": "static", "seed": 0}
DEMO_RESOURCES = {"workers": 1, "cpus_per_worker": 0.45}
# Round 2's demo experiment, pinned: bench/sweep_overhead.py measures launch costs on it, so a new demo space
# (fewer or other trials) does not move its numbers. Baselines off: they are not the sweep's overhead.
DEMO_R2 = {
    "name": "demo-like", **EMBEDDED,
    "train": {k: v for k, v in DEMO_TRAIN.items() if k != "loss_weighting"}, "resources": DEMO_RESOURCES,
    "search": {"num_samples": 10, "searcher": "random", "seed": 0, "baselines": False,
               "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 2},
               "space": {"train.freeze_depth": {"choice": [0, 2, 3, "all"]},
                         "train.backbone_lr": {"loguniform": [1.0e-3, 1.0e-2]},
                         "train.head_lr": {"loguniform": [1.0e-3, 1.0e-2]},
                         "train.loss_weighting": {"choice": ["static", "uncertainty", "dwa"]},
                         "train.loss_weights": {"simplex": {"concentration": 8.0}}}},
}


def default_method() -> tuple[str, str]:
    """The product's default searcher and scheduler type, read from config.space (not a copy of them)."""
    from orchestrator.config.space import SchedulerConfig, SearchConfig

    return SearchConfig.model_fields["searcher"].default, SchedulerConfig.model_fields["type"].default
