"""Data at scale: an image-file data set larger than memory budgets, streamed on 2 Ray Train workers.

    python bench/data_scale.py [--images 7200] [--small-images 6000] [--small-epochs 4] [--keep]

1. Generates, in child processes, JPEG files + manifests in a temporary folder (deleted at the end):
   a large set (default 7,200 training images at 224x224x3, whose decoded float32 size is 4.3 GB =
   4.04 GiB, + 500 validation images) and a small set (6,000 + 200 images at 64x64; round 2 used 2,000,
   whose 1-second epochs were too short to time: examples/s varied 1.6x between epochs of one run). Images are
   smooth (upscaled 8x8 noise), so JPEGs are small; tasks: `color` (which channel is brightest, 3 classes) and
   `brightness` (mean pixel, regression).
2. Trains the large set for 2 epochs on 2 workers with ``data.cache: disk`` (decoded once per node into a
   cache folder under the temporary folder, whose filesystem type is printed) through
   ``orchestrator.training.driver.train`` in this process, which is then the Ray driver and does nothing else heavy.
3. Trains the small set with ``cache: memory``, ``cache: stream`` and ``cache: disk``, same model and epochs,
   and compares steady-state examples/s (epochs 2..N).
4. A 2-trial sweep on the small set with ``cache: disk``, one trial after the other: the second trial's first
   epoch reads the first trial's cache (its examples/s against the first trial's first and steady epochs).

Backbone: a small .keras file with a strided stem (8x8 stride 8 at 224 px, 4x4 stride 4 at 64 px), so
the data path, not the model, is what is measured (``--backbone mobilenetv2`` uses MobileNetV2, weights
none, instead). Prints the driver's peak RSS (getrusage of this process), each Train worker's peak RSS
(``rank{r}_peak_rss_mb`` from the run's history), examples/s, and as its last line:

    RESULT driver_peak_mb=... worker_peak_mb=... stream_vs_memory=... disk_vs_memory=... second_trial_reuse=...

Goals: driver <= 1024 MB, each worker <= 2048 MB, disk_vs_memory >= 0.8. Data larger than RAM (the page cache)
is not tested here: the large set's decoded uint8 size is below this machine's memory.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

GOALS = {"driver_mb": 1024.0, "worker_mb": 2048.0, "disk_vs_memory": 0.8}


# -- data (runs in child processes: numpy + Pillow only) -------------------------------------------
def _write_images(args) -> list[str]:
    """Images ``start..stop`` of one split: JPEG files; returns their manifest lines."""
    import numpy as np
    from PIL import Image

    folder, part, start, stop, side, seed = args
    lines = []
    for i in range(start, stop):
        rng = np.random.default_rng([seed, i])
        low = rng.uniform(0, 255, (8, 8, 3))
        low[..., rng.integers(3)] += rng.uniform(40, 120)          # one channel brighter: the `color` label
        low = np.clip(low * rng.uniform(0.4, 1.0), 0, 255)        # overall brightness varies
        img = Image.fromarray(low.astype(np.uint8), "RGB").resize((side, side), Image.BICUBIC)
        rel = f"{part}/{i // 1000:03d}/{i:06d}.jpg"
        os.makedirs(os.path.join(folder, os.path.dirname(rel)), exist_ok=True)
        img.save(os.path.join(folder, rel), format="JPEG", quality=85)
        arr = np.asarray(img, np.float32)
        lines.append(f"{rel},{int(arr.mean(axis=(0, 1)).argmax())},{arr.mean() / 255:.5f}")
    return lines


def write_set(pool, folder: str, *, n_train: int, n_val: int, side: int, seed: int = 0) -> tuple[str, str]:
    out = []
    for part, n in (("train", n_train), ("val", n_val)):
        chunks = [(folder, part, s, min(s + 250, n), side, seed + (part == "val")) for s in range(0, n, 250)]
        lines = [line for chunk in pool.map(_write_images, chunks) for line in chunk]
        path = os.path.join(folder, f"{part}.csv")
        with open(path, "w") as f:
            f.write("image,color,brightness\n" + "\n".join(lines) + "\n")
        out.append(path)
    return out[0], out[1]


def _make_backbone(args) -> str:
    """A .keras backbone file (in a child process: the driver never builds models itself)."""
    path, side, kind = args
    import keras

    inp = keras.Input((side, side, 3), name="image")
    if kind == "mobilenetv2":
        app = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(side, side, 3),
                                             pooling="avg")
        out = app(keras.layers.Rescaling(1 / 127.5, offset=-1, name="scale")(inp))
    else:
        stride = 8 if side >= 128 else 4
        h = keras.layers.Rescaling(1 / 255, name="scale")(inp)
        h = keras.layers.Conv2D(16, stride, strides=stride, activation="relu", name="block1_stem")(h)
        h = keras.layers.Conv2D(32, 3, strides=2, activation="relu", name="block2_conv")(h)
        out = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    keras.Model(inp, out, name=f"bench_{kind}_{side}").save(path)
    return path


# -- runs (this process is the Ray driver) ---------------------------------------------------------
def config(folder: str, work: str, *, name: str, side: int, cache: str, epochs: int, backbone: str,
           batch_size: int):
    from orchestrator.config import parse_config

    return parse_config({
        "name": name, "storage": os.path.join(work, "runs"),
        "data": {"train": os.path.join(folder, "train.csv"), "validation": os.path.join(folder, "val.csv"),
                 "image_size": [side, side], "color_mode": "rgb", "cache": cache,
                 "cache_dir": os.path.join(work, "cache")},
        "tasks": {"color": {"type": "classification"}, "brightness": {"type": "regression", "metric": "r2"}},
        "backbone": {"kind": "file", "path": backbone},
        "heads": {"hidden_units": 32},
        "train": {"epochs": epochs, "batch_size": batch_size, "backbone_lr": 1e-3, "head_lr": 1e-3, "seed": 0},
        "resources": {"workers": 2, "cpus_per_worker": 0.95},   # a sweep's trial holds 0.05 CPU of the 2
    })


def run(cfg, label: str) -> dict:
    from orchestrator.training.driver import train
    from orchestrator.training.session import cache_mode, check

    mode = cache_mode(cfg, check(cfg).spec)
    t0 = time.perf_counter()
    with WorkerMemory() as memory:
        summary = train(cfg, out=lambda line: print(f"  [{label}] {line}", flush=True) if line.startswith("epoch")
                        else None)
    summary["memory"] = memory.text()
    if summary["status"] != "completed":
        raise SystemExit(f"{label}: run {summary['status']}: {summary['error']}")
    summary["mode"] = mode
    summary["bench_wall_s"] = time.perf_counter() - t0
    return summary


def steady(history: list[dict]) -> float:
    """Examples/s over epochs 2..N (all epochs if there is one): examples / training seconds."""
    rest = history[1:] or history
    return sum(m["examples_per_s"] * m["epoch_seconds"] for m in rest) / sum(m["epoch_seconds"] for m in rest)


def worker_peaks(summary: dict) -> list[float]:
    last = summary["history"][-1]
    return [last.get(f"rank{r}_peak_rss_mb", float("nan")) for r in range(summary["world_size"])]


class WorkerMemory:
    """Samples /proc of this node's Ray Train worker processes every 0.5 s (Linux): peak RSS split into
    private memory (RssAnon), mapped files (RssFile: mostly TensorFlow's shared libraries, shared by every
    TF process) and shared memory (RssShmem: Ray object-store pages the worker has read). ``ru_maxrss``,
    behind ``rank{r}_peak_rss_mb``, counts all three."""

    FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")

    def __init__(self):
        import threading

        self.peaks: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self):
        while not self._stop.wait(0.5):
            for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if not f.read().startswith(b"ray::RayTrainWorker"):
                            continue
                    with open(f"/proc/{pid}/status") as f:
                        status = {k: float(v.split()[0]) / 1024 for k, _, v in (line.partition(":") for line in f)
                                  if k in self.FIELDS}
                except (OSError, ValueError):
                    continue
                peak = self.peaks.setdefault(pid, {})
                for k, v in status.items():
                    peak[k] = max(peak.get(k, 0.0), v)

    def text(self) -> str:
        if not self.peaks:
            return "n/a (no /proc)"
        return "; ".join(f"RSS {p.get('VmRSS', 0):.0f} = private {p.get('RssAnon', 0):.0f} + files "
                         f"{p.get('RssFile', 0):.0f} + object store {p.get('RssShmem', 0):.0f}"
                         for p in sorted(self.peaks.values(), key=lambda p: -p.get("VmRSS", 0)))


def driver_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def filesystem_type(path: str) -> str:
    """The type of the filesystem holding ``path`` (the longest mount point of /proc/mounts above it)."""
    path, best = os.path.realpath(path), ("", "?")
    with open("/proc/mounts") as f:
        for line in f:
            _, mount, kind = line.split()[:3]
            if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best[0]):
                best = (mount, kind)
    return best[1]


def sweep_of_two(cfg) -> tuple[list[dict], list[dict]]:
    """Two trials (seeds 0 and 1) one after the other on the same disk cache: each trial's epochs, from its run's
    progress.json (a leaderboard row's history leaves out examples/s)."""
    from orchestrator import layout
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep.tuner import tune
    from orchestrator.training.progress import read_progress

    cfg = cfg.with_values({"search": {"searcher": "grid", "scheduler": {"type": "none"}, "max_concurrent_trials": 1,
                                      "base_first": False, "baselines": False,
                                      "space": {"train.seed": {"choice": [0, 1]}}}})
    tune(cfg, out=lambda line: None)
    rows = sorted(Leaderboard(cfg.storage).table(experiment=cfg.name).to_pylist(), key=lambda r: r["started_at"])
    first, second = (read_progress(layout.run_dir(cfg.storage, layout.trial_run_name(r["sweep_id"], r["trial_id"])))
                     for r in rows)
    return first["history"], second["history"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=7200, help="training images in the large set (224x224)")
    ap.add_argument("--small-images", type=int, default=6000, help="training images in the small set (64x64)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs on the large set")
    ap.add_argument("--small-epochs", type=int, default=4, help="epochs per small run (the first is excluded)")
    ap.add_argument("--backbone", choices=["strided", "mobilenetv2"], default="strided", help="large runs")
    ap.add_argument("--small-backbone", choices=["strided", "mobilenetv2"], default="strided", help="small runs")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()

    t_start = time.perf_counter()
    work = tempfile.mkdtemp(prefix="ds-", dir="/tmp" if os.path.isdir("/tmp") else None)
    big, small = os.path.join(work, "big"), os.path.join(work, "small")
    try:
        with mp.get_context("spawn").Pool(2) as pool:
            t0 = time.perf_counter()
            write_set(pool, big, n_train=args.images, n_val=500, side=224)
            write_set(pool, small, n_train=args.small_images, n_val=200, side=64)
            big_model, small_model = pool.map(_make_backbone, [(os.path.join(work, "big.keras"), 224, args.backbone),
                                                               (os.path.join(work, "small.keras"), 64, args.small_backbone)])
            gen_s = time.perf_counter() - t0
        on_disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(big) for f in fs)
        decoded = args.images * 224 * 224 * 3 * 4
        print(f"generated in {gen_s:.0f} s: {args.images} + 500 JPEG files at 224x224 ({on_disk / 2**20:.0f} MB on disk;"
              f" training set decoded as float32: {decoded / 1e9:.2f} GB = {decoded / 2**30:.2f} GiB), "
              f"{args.small_images} + 200 at 64x64; backbones {args.backbone} (large), {args.small_backbone} (small)",
              flush=True)

        from orchestrator.training.session import init_ray

        init_ray(None)
        print(f"driver peak RSS after ray.init: {driver_peak_mb():.0f} MB", flush=True)

        print(f"disk cache folder {os.path.join(work, 'cache')} on a {filesystem_type(work)} filesystem"
              f"{' (tmpfs: memory, not disk; the disk numbers do not count)' if filesystem_type(work) == 'tmpfs' else ''}",
              flush=True)
        large = run(config(big, work, name="scale", side=224, cache="disk", epochs=args.epochs,
                           backbone=big_model, batch_size=64), "large, disk")
        large_workers = worker_peaks(large)
        print(f"large ({large['mode']}): {large['data']['n_train']} train images, {len(large['history'])} epochs in "
              f"{large['bench_wall_s']:.0f} s; examples/s per epoch "
              f"{[round(m['examples_per_s']) for m in large['history']]}; worker peak RSS "
              f"{[round(w) for w in large_workers]} MB; driver peak RSS so far {driver_peak_mb():.0f} MB", flush=True)
        print(f"  worker peaks, MB (sampled from /proc): {large['memory']}", flush=True)

        results = {}
        for cache in ("memory", "stream", "disk"):
            s = run(config(small, work, name=f"small-{cache}", side=64, cache=cache, epochs=args.small_epochs,
                           backbone=small_model, batch_size=64), f"small, {cache}")
            results[cache] = s
            print(f"small, cache {cache} ({s['mode']}): steady {steady(s['history']):.0f} examples/s (epochs 2-"
                  f"{len(s['history'])}; per epoch {[round(m['examples_per_s']) for m in s['history']]}), worker peak "
                  f"RSS {[round(w) for w in worker_peaks(s)]} MB, {s['bench_wall_s']:.0f} s", flush=True)
            print(f"  worker peaks, MB (sampled from /proc): {s['memory']}", flush=True)
        first, second = sweep_of_two(config(small, work, name="small-sweep", side=64, cache="disk", epochs=2,
                                            backbone=small_model, batch_size=64))
        reuse = second[0]["examples_per_s"] / first[0]["examples_per_s"]
        print(f"2-trial sweep, cache disk: trial 1 epochs {[round(m['examples_per_s']) for m in first]} examples/s, "
              f"trial 2 epochs {[round(m['examples_per_s']) for m in second]}: trial 2's first epoch at {reuse:.2f}x "
              f"trial 1's (which decoded)", flush=True)
        memory = steady(results["memory"]["history"])
        ratio, disk_ratio = steady(results["stream"]["history"]) / memory, steady(results["disk"]["history"]) / memory
        driver = driver_peak_mb()
        worker = max(large_workers + [w for s in results.values() for w in worker_peaks(s)])
        verdict = {"driver": driver <= GOALS["driver_mb"], "worker": worker <= GOALS["worker_mb"],
                   "disk_vs_memory": disk_ratio >= GOALS["disk_vs_memory"]}
        print(f"goals: driver <= {GOALS['driver_mb']:.0f} MB: {'met' if verdict['driver'] else 'MISSED'}; "
              f"each worker <= {GOALS['worker_mb']:.0f} MB: {'met' if verdict['worker'] else 'MISSED'}; "
              f"disk/memory >= {GOALS['disk_vs_memory']}: {'met' if verdict['disk_vs_memory'] else 'MISSED'}"
              f"  (total {time.perf_counter() - t_start:.0f} s)", flush=True)
        print(f"RESULT driver_peak_mb={driver:.0f} worker_peak_mb={worker:.0f} stream_vs_memory={ratio:.2f} "
              f"disk_vs_memory={disk_ratio:.2f} second_trial_reuse={reuse:.2f}", flush=True)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
