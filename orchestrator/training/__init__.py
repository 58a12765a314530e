"""Stage 4 — one run on Ray Train: the driver session, the Ray Train trainer and its TF_CONFIG backend, the per-worker
loop, checkpoints, progress and TensorBoard files, and pretraining the built-in backbone."""
