"""Stage 3 — the model: backbones and their blocks, the multi-task model with its losses and exact metrics, and the
loss weighting. Knows nothing of Ray or Tune. (Importing a module here loads TensorFlow; this face imports none.)"""
