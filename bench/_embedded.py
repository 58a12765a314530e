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
