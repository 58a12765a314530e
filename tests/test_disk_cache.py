"""data.cache: disk: units decoded once into a node's cache folder, then read memory-mapped; the key follows the
files; auto picks memory, then disk, then stream."""
from __future__ import annotations

import os
import shutil
from collections import Counter

import numpy as np
import pytest

from orchestrator.config import parse_config
from orchestrator.data import decode, disk_cache
from orchestrator.data.decode import decode_options
from orchestrator.data.prepare import prepare
from orchestrator.training.session import cache_mode

from factories import experiment, small_table, write_parquet


@pytest.fixture()
def prepared(tmp_path):
    cfg = parse_config(experiment(tmp_path, write_parquet(tmp_path / "d.parquet", small_table(300))))
    data = prepare(cfg)
    return cfg, data, decode_options(cfg.model_dump(mode="json"), data.spec.to_dict())


def test_units_are_decoded_once_then_read_from_the_cache(prepared, tmp_path, monkeypatch):
    cfg, data, opts = prepared
    calls = Counter()
    real = decode.decode_unit

    def counting(unit, opts):
        calls[unit["rows"][0]] += 1
        return real(unit, opts)

    monkeypatch.setattr(decode, "decode_unit", counting)
    folder, units = str(tmp_path / "cache"), data.train_units
    order = list(range(len(units)))[::-1]
    first = list(disk_cache.units_in_order(folder, "train", order, units, opts))
    assert sum(calls.values()) == len(units) and set(calls.values()) == {1}
    again = list(disk_cache.units_in_order(folder, "train", order, units, opts))
    assert sum(calls.values()) == len(units)          # nothing decoded twice
    for a, b, i in zip(first, again, order):
        expected = real(units[i], opts)
        assert isinstance(b["image"], np.memmap) and b["image"].dtype == np.dtype(data.spec.pixel_dtype)
        np.testing.assert_array_equal(b["image"], expected["image"])
        np.testing.assert_array_equal(a["image"], expected["image"])
        for task in cfg.tasks:
            np.testing.assert_array_equal(b[f"y_{task}"], expected[f"y_{task}"])


def test_a_half_written_unit_is_never_read(prepared, tmp_path):
    _, data, opts = prepared
    folder = tmp_path / "cache"
    folder.mkdir()
    images, labels = disk_cache._paths(str(folder), "train", data.train_units[0])
    (folder / ".tmp-1-train-0.npy").write_bytes(b"\x93NUMPY half")   # a writer killed before its rename
    with open(labels, "wb") as f:
        f.write(b"half")                                               # labels renamed, images not yet
    got = disk_cache.load_or_decode(str(folder), "train", 0, data.train_units[0], opts)
    np.testing.assert_array_equal(got["image"], decode.decode_unit(data.train_units[0], opts)["image"])
    assert os.path.exists(images) and np.load(labels)["row"].shape == (len(data.train_units[0]["rows"]),)


def test_a_cache_left_by_another_unit_layout_serves_each_unit_its_own_rows(prepared, tmp_path):
    """Units are sized by the worker count, and a cache folder outlives a killed run: a run with other units in the
    same folder must read each unit's own rows, never the file another layout wrote at the same index."""
    _, data, opts = prepared
    folder, units = str(tmp_path / "cache"), data.train_units
    halves = [{**u, "rows": u["rows"][:max(1, len(u["rows"]) // 2)]} for u in units]   # another layout, same data
    list(disk_cache.units_in_order(folder, "train", list(range(len(units))), units, opts))
    got = list(disk_cache.units_in_order(folder, "train", list(range(len(halves))), halves, opts))
    for unit, arrays in zip(halves, got):
        np.testing.assert_array_equal(arrays["row"], decode.decode_unit(unit, opts)["row"])


def test_shuffled_batches_are_full_and_never_repeat_a_row():
    units = [{"image": np.arange(n)[:, None], "row": np.arange(n) + 100 * k} for k, n in enumerate([7, 5, 9, 3, 8])]
    batches = list(disk_cache.shuffled_batches(iter(units), batch_size=4, seed=0, keys=["image", "row"]))
    rows = np.concatenate([b["row"] for b in batches])
    assert all(len(b["row"]) == 4 for b in batches) and len(rows) == len(set(rows.tolist()))
    assert len(rows) > 32 - 4 and len(rows) % 4 == 0
    again = list(disk_cache.shuffled_batches(iter(units), batch_size=4, seed=0, keys=["image", "row"]))
    assert all((a["row"] == b["row"]).all() for a, b in zip(batches, again))      # seeded


def test_the_cache_key_follows_the_image_files(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("m", os.path.join(os.path.dirname(__file__), "..", "examples",
                                                                    "make_image_files.py"))
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    manifest = maker.write_split(str(tmp_path), "train", n=20, seed=0, min_side=12, max_side=14)
    cfg = parse_config(experiment(tmp_path, manifest, data={"image_size": [12, 12], "color_mode": "rgb"}))
    data = prepare(cfg)
    opts = decode_options(cfg.model_dump(mode="json"), data.spec.to_dict())
    key = lambda: disk_cache.cache_folder(None, fingerprint=data.spec.fingerprint, opts=opts,  # noqa: E731
                                          stats=disk_cache.file_stats(data.train_units), owner="sweep s")
    before = key()
    assert before == key() and before.startswith(disk_cache.DEFAULT_ROOT)
    path = data.train_units[0]["paths"][0]
    os.utime(path, ns=(1, 1))           # the same name, another file: the cache must not serve the old one
    assert key() != before


def test_auto_picks_memory_then_disk_then_stream(prepared, tmp_path, monkeypatch):
    cfg, data, _ = prepared
    small = cfg.with_values({"data.cache_budget_mb": 1024.0})
    tight = cfg.with_values({"data.cache_budget_mb": 0.001, "data.cache_dir": str(tmp_path / "c")})
    assert cache_mode(small, data.spec) == "memory"
    assert cache_mode(tight, data.spec) == "disk"
    # A full disk cannot be made here: shutil.disk_usage stands in for one with 1 KB free.
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 ** 12, 10 ** 12, 1024))
    assert cache_mode(tight, data.spec) == "stream"
    assert cache_mode(cfg.with_values({"data.cache": "disk"}), data.spec) == "disk"


def test_the_cache_key_follows_the_code_and_the_command(monkeypatch):
    """A folder left by a killed command is found again by the same key: it must not serve pixels that older code
    decoded (the 16-bit PNG fix changed them), nor be removed by another command ending while this one reads it
    (two sweeps of one data set shared one folder, and the first to end deleted it under the other)."""
    from orchestrator.config import schema

    key = lambda owner: disk_cache.cache_folder(None, fingerprint="f", opts={"image_size": None},  # noqa: E731
                                                stats=[(1, 2)], owner=owner)
    before = key("sweep s1")
    assert key("sweep s1") == before != key("sweep s2") != key("train run r")
    monkeypatch.setattr(schema, "TRAINING_REVISION", schema.TRAINING_REVISION + 1)
    assert key("sweep s1") != before


def test_a_cold_epoch_decodes_only_a_few_units_ahead_of_the_reader(prepared, tmp_path, monkeypatch):
    """Executor.map submitted every unit at once: with a slow reader, a worker's whole share of a data set larger
    than memory was decoded and held in memory. Decoding runs at most DECODERS units ahead."""
    import time

    _, data, opts = prepared
    started = []
    monkeypatch.setattr(disk_cache, "load_or_decode", lambda folder, split, i, unit, opts: started.append(i) or {})
    order = list(range(len(data.train_units))) * 4
    reader = disk_cache.units_in_order(str(tmp_path / "c"), "train", order, data.train_units, opts)
    next(reader)
    time.sleep(0.3)
    assert len(order) > 8 and len(started) <= disk_cache.DECODERS + 1, started
    reader.close()


def test_a_units_files_are_fsynced_before_they_are_renamed_into_place(prepared, tmp_path, monkeypatch):
    """A rename of an unsynced file can survive a power loss that its bytes do not: the cache then held a truncated
    unit that failed every later read. Each file is flushed and fsynced before its rename, then the folder."""
    _, data, opts = prepared
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(disk_cache.os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(disk_cache.os, "replace", lambda a, b: events.append("replace") or real_replace(a, b))
    disk_cache.load_or_decode(str(tmp_path / "c"), "train", 0, data.train_units[0], opts)
    assert events == ["fsync", "replace", "fsync", "replace", "fsync"], events


def test_a_relative_cache_dir_is_refused_in_one_line(tmp_path, monkeypatch):
    """``disk_cache.fits`` walked up a relative path that does not exist to '' and looped for ever. A relative
    ``data.cache_dir`` has no one meaning on every node (the driver's working directory is not theirs): refused."""
    from orchestrator.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="data.cache_dir 'not/there/yet' is relative"):
        disk_cache.fits("not/there/yet", 1)
    assert disk_cache.fits(str(tmp_path / "not" / "there"), 1) is True
    assert disk_cache.root("~/decoded") == os.path.expanduser("~/decoded")


def test_one_run_name_on_two_storages_has_two_caches(prepared, tmp_path):
    """`train --name r` into two storages at once on one node shared one cache folder (the key named the command,
    'train run r', not where it writes), and the first to end removed it under the other."""
    from types import SimpleNamespace

    from orchestrator.training.session import disk_folder

    cfg, data, _ = prepared
    folder = lambda storage: disk_folder(SimpleNamespace(cfg=cfg.with_values({"storage": storage}),  # noqa: E731
                                                         spec=data.spec, data=data), owner="train run r")
    assert folder(str(tmp_path / "a")) == folder(str(tmp_path / "a")) != folder(str(tmp_path / "b"))


def test_the_folders_of_this_hosts_killed_commands_are_orphans_but_a_killed_sweeps_is_kept(tmp_path):
    """A command killed (SIGKILL, a lost head node) never removed its disk cache, as large as its data set decoded,
    and nothing removed it after. Each folder now holds its command's owner record: the next disk-cache command of
    that host removes the folders whose driver is gone (session.ship_data, on every node), except a sweep's, which
    its --resume reads. A live driver's folder stays, and so do those of other hosts' drivers (theirs to judge) and
    folders without a record. A pid given to a later process does not keep a dead command's folder (Linux)."""
    import socket
    import subprocess
    import sys

    gone_process = subprocess.Popen([sys.executable, "-c", "pass"])
    gone_process.wait()
    host, me = socket.gethostname(), disk_cache.owner_record("train run live", keep=False)
    assert me["pid"] == os.getpid() and me["start"] is not None and disk_cache.alive(me)

    def record(owner, *, keep=False, on=host, namespace=None):
        where = namespace or (me["host_id"] if on == host else "another host's")
        return {"owner": owner, "host": on, "host_id": where, "pid": gone_process.pid, "start": None, "keep": keep}

    root = tmp_path / "decoded"
    # "beside": a driver in another pid namespace of this host (a --net=host container), whose pid is not seen here;
    # "older": a record of older code, which does not say its namespace
    older = {k: v for k, v in record("train run older").items() if k != "host_id"}
    folders = {"killed": record("train run killed"), "sweep": record("sweep s1", keep=True), "live": me,
               "away": record("train run away", on="another-host"), "reused": {**me, "owner": "confirm", "start": "1"},
               "beside": record("train run beside", namespace="another pid namespace"), "older": older}
    for name, r in folders.items():
        disk_cache._claim(str(root / name), r)
    (root / "norecord").mkdir()
    found = disk_cache._owned(str(root))
    assert sorted(os.path.basename(f) for f, _ in found) == sorted(folders)
    orphans = disk_cache.orphans(found)
    assert {os.path.basename(f): owner for f, owner in orphans.items()} == {"killed": "train run killed",
                                                                             "reused": "confirm"}


def test_units_that_differ_only_in_their_middle_rows_have_files_of_their_own(tmp_path):
    """A unit's file is named by a hash of what it holds, but that hash read numpy's text form of its arrays, which
    shows only their first and last 3 values past 1,000 of them: a pixel table's units of 1,024 rows whose labels or
    rows differed in the middle shared one file, and could be served each other's decoded rows."""
    rows = np.arange(1024)
    one = {"rows": rows, "y": {"left": np.zeros(1024, np.int64)}}
    other = {"rows": rows, "y": {"left": np.where((rows > 10) & (rows < 1000), 3, 0)}}
    moved = {"rows": np.concatenate([rows[:500], rows[501:], rows[500:501]]), "y": one["y"]}
    names = {disk_cache._paths(str(tmp_path), "train", u)[0] for u in (one, other, moved)}
    assert len(names) == 3, names
    assert disk_cache._paths(str(tmp_path), "train", {**one})[0] in names   # the same unit: the same file


def test_every_epoch_deals_each_worker_the_same_number_of_rows_whatever_the_seed():
    """Streamed or cached units are dealt to the workers anew each epoch. Dealt round-robin in a shuffled order, 9
    units (8 of 128 rows, one of 76) gave 2 workers [640, 460] rows in some epochs and [588, 512] in others: an epoch
    trained 3 or 4 steps of 128 per worker, as the seed fell, and the driver's check saw only the unshuffled deal
    (validate said ok to a batch a worker's 460 could not fill; train then failed on the cluster). Found by a
    helper's audit."""
    from orchestrator.data.dealing import deal, rows_per_rank

    sizes = [128] * 8 + [76]
    deals = {tuple(rows_per_rank(sizes, world=2, epoch=e, seed=s)) for e in [None, *range(20)] for s in range(5)}
    assert deals == {(588, 512)}, deals
    for epoch in range(5):
        dealt = deal(sizes, world=2, epoch=epoch, seed=0)
        assert sorted(dealt[0] + dealt[1]) == list(range(9))             # each unit once
    orders = {tuple(deal(sizes, world=2, epoch=e, seed=0)[0]) for e in range(5)}
    assert len(orders) == 5                                              # still reshuffled every epoch
    assert rows_per_rank([128] * 7 + [100, 60, 20], world=3, epoch=None, seed=0) == [384, 356, 336]   # largest first


def test_memory_mode_deals_its_blocks_as_the_drivers_check_counts_them():
    """The driver checks a batch against each worker's share as dealt (``deal``, largest first), and streamed units
    are dealt so; the in-memory blocks (one per unit) were still dealt round-robin: units [128, 1, 128, 1] on 2
    workers were checked as [129, 129] and trained as [256, 2]. Found by a helper's review."""
    from orchestrator.data.dealing import memory_blocks, rows_per_rank

    sizes = [128, 1, 128, 1]
    payload = {"train": ["b0", "b1", "b2", "b3"], "sizes": {"train": sizes, "val": [5, 5, 5]}, "val": ["v0", "v1", "v2"]}
    shares = [memory_blocks(payload, "train", rank=r, world=2) for r in range(2)]
    assert [sum(sizes[int(b[1])] for b in share) for share in shares] == rows_per_rank(sizes, world=2, epoch=None,
                                                                                        seed=0) == [129, 129]
    assert sorted(memory_blocks(payload, "val", rank=0, world=2) + memory_blocks(payload, "val", rank=1, world=2)) == \
        ["v0", "v1", "v2"]
