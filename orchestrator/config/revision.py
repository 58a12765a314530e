"""The code's training revision: what a config trains or measures also depends on the code. Bump it when a change does
(2: round 3's FAMO Adam step, AUC from logit bins, float64 R² sums; 3: InceptionV3, MobileNet and MobileNetV3
grouped into their modules and units, so their freeze depths count other blocks; uncertainty's log-variances without
weight decay; a backbone's regularization losses trained; no dropout or noise inside frozen blocks; BatchNorm
statistics averaged over workers before validation; 4: each worker draws its own dropout and noise masks, which were
the same on every worker; 5: RLW's draws no longer share the first head's dropout stream; streamed, disk-cached and
in-memory units dealt to the workers by rows, the same shares every epoch). The config hash, the baseline key and
the disk-cache key cover it; rows, checkpoints and sweep records carry it, so the work of older code is not reused,
resumed or pooled with newer work (README, "No identical work")."""
TRAINING_REVISION = 5


def revision_of(record: dict) -> int:
    """The revision a row, checkpoint state or sweep record was made by; none recorded: 1 (made before it existed)."""
    return record.get("training_revision") or 1


def task_order(tasks) -> dict:
    """What hashes of work sort away and training does not: heads are built in the tasks' order and per-task state
    (learned loss weights, optimizer slots) is saved by position, so another order is other work. Tasks in sorted
    order add nothing (their hashes stay those of earlier code)."""
    return {"task_order": list(tasks)} if list(tasks) != sorted(tasks) else {}
