"""The driver's start-up: the one sequence every command runs, so all of them print the same lines in the same order.

    check      config, data, backbone, freeze depth, batch against a worker's share (+ the caller's own checks, e.g.
               the search space): every mistake the user can make, before anything starts
    describe   config.json next to the run or sweep, one line saying where it is, the data line and advice
    start      pretrain the built-in backbone (cached) -> start or join Ray -> ship data and backbone

`train`, `tune`, `baselines`, `confirm` and `demo` run all three; `validate` runs check and describe only, and never
pretrains or starts Ray.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

from .. import _ray, credentials, layout, storage
from ..config.freezing import every_block_as_all, frozen_blocks
from ..config.space import walk
from ..config.schema import ExperimentConfig
from ..data import leakage
from ..data.builtin import IMAGE_SHAPE
from ..data.dealing import rows_per_rank, sizes_of
from ..data.prepare import prepare
from ..data.spec import DataSpec, PreparedData
from ..endpoints import joined, reach_storage, refuse_ray_token, require_writable
from ..errors import ConfigError, DataError
from .batch import per_worker_batch

log = logging.getLogger("orchestrator")

# Ray Train waits this long for a worker group before retrying. TF start-up on 2 cores can pass Ray's default of
# 60 s, and so can an autoscaler's node launch; raised on every node (NODE_ENV): a trial's Train controller runs in
# the trial's process, which takes its node's environment, not the driver's.
WORKER_START_TIMEOUT_S = "600"
# The Train controller polls its workers at this pace; a report waits for a poll (a worker holds one report at a
# time), and so does the end of a run. Measured with the controller in the trial's process (10 reports 0.3 s apart,
# no TensorFlow): 0.45 s per report at 0.5 s, 0.21 s at 0.2 s, 0.23 s at 0.1 s, and no more CPU at 0.2 s than at
# 0.5 s (6.5 against 7.5 CPU-s per trial). 0.5 s came from 0.1 s costing the controller's own actor CPU.
HEALTH_CHECK_INTERVAL_S = "0.2"
# Ray ends a task's idle worker process after 1 s once a node runs more worker processes than it has CPUs (its
# soft limit), as a Train run always does on small nodes: streaming decoders were ended between (and within) epochs
# and started again on the training cores, 32 processes for one 6-epoch 2-worker run (a streamed epoch took 18 s,
# 6 s with them kept). Kept 60 s, they serve the whole run and the next trial; the price is their memory for a
# minute after.
IDLE_WORKER_KEEP_MS = "60000"
# What every Ray node of ours runs with: init_ray sets it for the Ray it starts, cluster.yaml's ray start lines too.
NODE_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": HEALTH_CHECK_INTERVAL_S,
            "RAY_idle_worker_killing_time_threshold_ms": IDLE_WORKER_KEEP_MS,
            "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": WORKER_START_TIMEOUT_S}


@dataclass(frozen=True)
class Prepared:
    """A checked configuration: the config (storage made absolute), its data cut into units, its backbone's blocks."""
    cfg: ExperimentConfig
    data: PreparedData
    n_blocks: int

    @property
    def spec(self) -> DataSpec:
        return self.data.spec


@dataclass(frozen=True)
class Session:
    """What the driver holds once started: the checked configuration, and where workers find data and backbone."""
    prepared: Prepared
    data: dict                      # `ship_data`: ObjectRefs of decoded blocks, or of units to stream
    backbone: Optional[dict]        # `ship_backbone`: the backbone or weights file, or None
    autoscaler: bool = True         # the Ray joined may have one (not one this process started): runs ask it

    @property
    def cfg(self) -> ExperimentConfig:
        return self.prepared.cfg

    @property
    def backbone_digest(self) -> Optional[str]:
        """The shipped backbone file by content (what rows record, for merge: a path can hold another file later)."""
        return (self.backbone or {}).get("digest")


def check(cfg: ExperimentConfig, *, also: Sequence[Callable[[Prepared], None]] = ()) -> Prepared:
    """Everything that can fail because of the user's input, before any Ray resources are used."""
    cfg = resolve_storage(cfg)
    data = prepare(cfg)
    spec = data.spec
    b = cfg.backbone
    if b.kind == "application" and b.weights == "imagenet" and spec.image_shape[-1] != 3:
        raise DataError(f"backbone {b.name} with ImageNet weights needs 3 channels; the images have "
                        f"{spec.image_shape[-1]}: set data.color_mode: rgb (or use weights: none)")
    if b.kind == "builtin" and b.weights == "pretrained" and tuple(spec.image_shape) != IMAGE_SHAPE:
        shape = "x".join(map(str, IMAGE_SHAPE))
        raise DataError(f"the pretrained built-in backbone takes {shape} images; these are "
                        f"{'x'.join(map(str, spec.image_shape))}: set data.image_size: [12, 12] and data.color_mode: "
                        f"grayscale, or use backbone.weights: none (or another backbone)")
    check_batch(cfg, data)      # before the backbone is built: TensorFlow loads there
    n_blocks = count_blocks(cfg, spec.image_shape)
    frozen_blocks(cfg.train.freeze_depth, n_blocks)
    p = Prepared(every_block_as_all(cfg, n_blocks), data, n_blocks)
    for more in also:
        more(p)
    return p


def describe(p: Prepared, *, record: Optional[str], out=print) -> None:
    """The resolved config to ``<record>/config.json`` and the log, one line saying where; then the data line and
    advice. ``record``: the run's or sweep's folder (None: `validate`, which writes nothing)."""
    public = p.cfg.public_dump()
    log.info("resolved config: %s", json.dumps(public, sort_keys=True))
    if record is not None:
        location = storage.join(record, layout.CONFIG_FILE)
        storage.atomic_write(location, json.dumps(public, indent=2, sort_keys=True).encode())
        out(f"config: {storage.redact(location)}")
    for line in advice(p):
        out(line)


def start(p: Prepared, *, owner: str, record: Optional[str], address: Optional[str] = None, verbose: bool = False,
          keep: bool = False, out=print, ready: Optional[Callable[[], None]] = None) -> Session:
    """Start or join Ray; ``ready()``, the caller's checks against the cluster (the run fits); the resolved config to
    ``record`` (``describe``); then pretrain the built-in backbone (cached) and ship data and backbone, the costly
    parts. ``owner``: the command the session serves (``sweep ID``, ``train run NAME``, ...), whose disk cache it is;
    ``keep``: a killed command's disk cache is kept for its resume (a sweep's, a named train run's)."""
    init_ray(address, log_to_driver=verbose)
    if ready is not None:
        ready()
    describe(p, record=record, out=out)
    ensure_pretrained(p.cfg, out=out)
    return Session(p, ship_data(p, owner=owner, keep=keep, out=out), ship_backbone(p.cfg),
                   autoscaler=not _ray.started_here())


def resolve_storage(cfg: ExperimentConfig) -> ExperimentConfig:
    """An S3 endpoint of storage, data or backbone that takes no connection is refused, and a local storage we may not
    write. Relative local storage becomes absolute; credentials in storage, data or backbone URIs are kept in memory
    (``storage.adopt_credentials``), for this location only."""
    values = {}
    for path, value in (("storage", cfg.storage), ("data.train", cfg.data.train),
                        ("data.validation", cfg.data.validation), ("backbone.path", cfg.backbone.path),
                        ("backbone.weights", cfg.backbone.weights)):
        if isinstance(value, str) and storage.is_uri(value):
            storage.require_bucket(value)
            reach_storage(value)            # one line now, not the SDK's retries once Ray has started
        if isinstance(value, str) and storage.has_credentials(value):
            values[path] = storage.adopt_credentials(value)
    if not storage.is_uri(cfg.storage):
        require_writable(cfg.storage)   # a folder we may write: else one line now, not an OSError once Ray started
        values.update({} if os.path.isabs(cfg.storage) else {"storage": os.path.abspath(cfg.storage)})
    return cfg.with_values(values) if values else cfg


def count_blocks(cfg: ExperimentConfig, image_shape) -> int:
    """Blocks of the configured backbone: builds it (a file backbone or weights file is loaded, once,
    here on the driver; the built-in's pretrained weights are not needed to count)."""
    from ..console import quiet_tensorflow
    from ..model import backbones
    from . import precision

    try:   # TensorFlow here would take nearly all of a GPU's memory for the sweep: the packed workers' shares
        precision.configure_gpus(quiet_tensorflow(), 1.0)   # memory as needed, as a worker with whole cards
    except (RuntimeError, ValueError):
        pass   # TensorFlow already runs in this process, or its GPUs are split into logical devices (a notebook's)
    bb = cfg.backbone
    if bb.kind == "builtin":
        bb = bb.model_copy(update={"weights": "none"})
    elif bb.kind == "application" and bb.weights == "imagenet":
        bb = bb.model_copy(update={"weights": "none"})   # the architecture is the same; no download here
    built = backbones.build_backbone(bb, image_shape, storage=cfg.storage, precision=cfg.train.precision)
    return len(backbones.blocks(backbones.block_model(built), cfg.backbone.blocks,
                                application=bb.kind == "application"))


def advice(p: Prepared) -> list[str]:
    """What the data is and how workers will get it, then things that are allowed but probably wrong, one line each."""
    s, mode = p.spec, cache_mode(p.cfg, p.spec)
    share_mb = worker_share_bytes(p.cfg, s) / 2 ** 20
    how = {"memory": "kept in memory", "disk": f"decoded once per node into a disk cache under {disk_root(p)}",
           "stream": "streamed every epoch"}[mode] + \
        (f" (data.cache: auto, budget {p.cfg.data.cache_budget_mb:g} MB)" if p.cfg.data.cache == "auto" else "")
    lines = [f"data: {s.n_train} training + {s.n_val} validation images, {'x'.join(map(str, s.image_shape))} "
             f"{s.pixel_dtype}; a worker's decoded share is {share_mb:.1f} MB, {how}"]
    lines += leakage.warning(p.data.overlap)
    if p.cfg.data.cache == "none":
        lines.append("note: data.cache: none is now called stream (the old name still works): write data.cache: stream")
    flips = [p.cfg.data.augment.flip] + [o for q, d, _ in walk(p.cfg.search.space if p.cfg.search else {})
                                         if q == "data.augment.flip" and d.kind == "choice" for o in d.options]
    flip = next((f for f in flips if f != "none"), None)   # the digits sit top left and bottom right: any flip moves
    if flip and str(p.cfg.data.train).startswith("builtin:multidigits"):   # each into the other's place
        lines.append(f"warning: data.augment.flip {flip} mirrors the built-in MultiDigits canvases: their left and "
                     f"right digits swap places, so each side's task trains on the other's label: use flip none")
    if p.cfg.backbone.kind == "application" and p.spec.max_pixel <= 1.0:
        lines.append(f"warning: the sampled pixels are at most {p.spec.max_pixel:g}, but {p.cfg.backbone.name} expects "
                     f"0-255 (its preprocess_input is inside the model): store pixels as 0-255")
    return lines


def check_batch(cfg: ExperimentConfig, data: PreparedData, *, workers: int | None = None) -> None:
    """The global batch splits evenly across the workers, and every worker fills at least one batch of its share."""
    world = workers or cfg.resources.workers
    per_worker = per_worker_batch(cfg.train.batch_size, world)
    rows = min(rows_per_rank(sizes_of(data.train_units), world=world, epoch=None, seed=0))
    if rows < per_worker:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} needs {per_worker} examples per worker per "
                          f"step, but a worker's share of the {data.spec.n_train} training examples can be {rows}: "
                          f"lower train.batch_size or use fewer workers")


def ensure_pretrained(cfg: ExperimentConfig, *, out=print) -> None:
    """The built-in backbone's pretrained weights, trained once per storage (cached)."""
    if cfg.backbone.kind == "builtin" and cfg.backbone.weights == "pretrained":
        from .pretrain import pretrain

        pretrain(cfg.storage, out=out)


def init_ray(address: str | None = None, *, num_gpus: float | None = None, log_to_driver: bool = False) -> None:
    import ray

    from ..console import mute_ray_stderr, quiet_logs

    # A late poll is only awaited again (a worker counts as dead after 600 s), so a short interval is safe. A raylet
    # that ray.init starts below (no address) reads its settings from this environment.
    for name, value in NODE_ENV.items():
        os.environ.setdefault(name, value)
    # No address: a Ray of our own ("local"), not the cluster a `ray start` left on the machine (ray.init() joins
    # that); in a Ray job, RAY_ADDRESS names the job's cluster.
    own = not address and not os.environ.get("RAY_ADDRESS")
    if own:
        address = "local"
        # One machine has no node to lose to preemption: no PreemptionWatcher actor per run (it polled the node
        # table every 5 s). On clusters it stays (spot nodes); a lost node is noticed there either way.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    if not ray.is_initialized():
        refuse_ray_token(address)
        _ray.redacted_entrypoint(storage.redact_text)   # a secret on the command line stays out of the job table
        options = {"num_gpus": num_gpus} if (num_gpus is not None and own) else {}
        ray.init(address=address, log_to_driver=log_to_driver, configure_logging=True, logging_level="ERROR",
                 include_dashboard=None, **options)
    elif not own and address not in (None, "auto") and not joined(address):
        raise ConfigError(f"Ray already runs in this process (at {ray.get_runtime_context().gcs_address}), which "
                          f"cannot also join {address}: call ray.shutdown() first, or leave the address out")
    credentials.publish()   # credentials taken out of URIs reach Ray's processes through the object store
    quiet_logs()   # Ray Data runs on the driver too (decoding into the object store)
    if not log_to_driver:
        mute_ray_stderr()   # ray.init attached its stderr handler again


def cache_mode(cfg: ExperimentConfig, spec: DataSpec) -> str:
    """memory, disk or stream. ``auto``: memory when a worker's decoded shard fits the budget, else disk when this
    node's cache disk holds the whole decoded data set (any unit can reach any rank), else stream."""
    from ..data.disk_cache import fits

    if cfg.data.cache != "auto":
        return "stream" if cfg.data.cache == "none" else cfg.data.cache     # "none": stream's old name
    if worker_share_bytes(cfg, spec) <= cfg.data.cache_budget_mb * 2 ** 20:
        return "memory"
    return "disk" if fits(cfg.data.cache_dir, (spec.n_train + spec.n_val) * spec.decoded_bytes_per_image) else "stream"


def worker_share_bytes(cfg: ExperimentConfig, spec: DataSpec) -> float:
    """Decoded bytes of one worker's share of the training and validation rows."""
    return (spec.n_train + spec.n_val) / cfg.resources.workers * spec.decoded_bytes_per_image


def ship_data(p: Prepared, *, owner: str, keep: bool = False, out=print) -> dict:
    """What workers read: decoded blocks in the object store (memory), or units to stream, or to cache on disk (the
    folder made on every node with its owner record, after the folders of this host's killed commands are removed)."""
    import ray

    from ..data.decode import decode_options
    from ..data.pipeline import decode_to_object_store

    opts = decode_options(p.cfg.model_dump(mode="json"), p.spec.to_dict())
    mode = cache_mode(p.cfg, p.spec)
    if mode == "memory":
        return {"mode": mode, "opts": opts, "train": decode_to_object_store(p.data.train_units, opts),
                "val": decode_to_object_store(p.data.val_units, opts),
                "sizes": {"train": sizes_of(p.data.train_units), "val": sizes_of(p.data.val_units)}}
    shipped = {"mode": mode, "opts": opts, "train": ray.put(p.data.train_units), "val": ray.put(p.data.val_units)}
    if mode == "disk":
        from ..data.disk_cache import claim_everywhere, owner_record, remove_orphans

        gone = remove_orphans(disk_root(p))
        if gone:
            what = "1 folder" if len(gone) == 1 else f"{len(gone)} folders"
            out(f"disk cache: removed {what} left by killed commands: {', '.join(sorted(gone.values()))}")
        shipped["folder"] = disk_folder(p, owner=owner)
        claim_everywhere(shipped["folder"], owner_record(owner, keep=keep))
    return shipped


def disk_folder(p: Prepared, *, owner: str) -> str:
    """The node-local folder of this command's disk cache of this data set (the same on every node). A command is
    its owner where it writes: `train --name r` into two storages is two commands, each removing its own folder."""
    from ..data.decode import decode_options
    from ..data.disk_cache import cache_folder, file_stats

    opts = decode_options(p.cfg.model_dump(mode="json"), p.spec.to_dict())
    return cache_folder(p.cfg.data.cache_dir, fingerprint=p.spec.fingerprint, opts=opts,
                        stats=file_stats(p.data.train_units + p.data.val_units), owner=f"{owner} in {p.cfg.storage}")


def disk_root(p: Prepared) -> str:
    from ..data.disk_cache import root

    return root(p.cfg.data.cache_dir)


def release(session: "Session") -> None:
    """What a command's session leaves on the cluster when it ends normally: the disk cache on every node."""
    if session.data.get("mode") == "disk":
        from ..data.disk_cache import remove_everywhere

        remove_everywhere(session.data["folder"])


@contextlib.contextmanager
def one_off(p: Prepared, *, owner: str, record: Optional[str], address: Optional[str] = None, out=print,
            ready: Optional[Callable[[], None]] = None) -> Iterator[Session]:
    """The session of a command nothing resumes (confirm, ablate, baselines): released however the command ends (an
    error, Ctrl-C), as no later command reads its disk cache. (A killed process still leaves it.)"""
    session = start(p, owner=owner, record=record, address=address, out=out, ready=ready)
    try:
        yield session
    except BaseException:
        with contextlib.suppress(Exception):   # best effort: the error that ended the command is the one to show
            release(session)
        raise
    release(session)


def ship_backbone(cfg: ExperimentConfig) -> Optional[dict]:
    """A backbone or weights file the workers need, through the object store (any cluster, no shared disk)."""
    import ray

    b = cfg.backbone
    location = (b.path if b.kind == "file" else layout.builtin_backbone(cfg.storage) if b.kind == "builtin" and
                b.weights == "pretrained" else b.weights if b.kind == "application" and b.weights not in
                ("imagenet", "none") else None)
    if location is None:
        return None
    # Wrapped in a dict: Tune's with_parameters resolves top-level ObjectRefs, nested ones stay references.
    blob = storage.read_bytes(location)
    return {"ref": ray.put((blob, os.path.splitext(location.split("?")[0])[1])),
            "digest": hashlib.sha256(blob).hexdigest()[:16]}
