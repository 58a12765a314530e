"""`orchestrator train` run names: unique by default; a name used by another config is refused; one live writer per
run folder (its lease)."""
import json
import os
import threading
import time
from pathlib import Path

import pytest


from factories import experiment, run_cli, write_yaml
from orchestrator import layout
from orchestrator.config.schema import TRAINING_REVISION


def test_default_run_names_are_unique():
    from orchestrator.training.driver import run_name

    names = {run_name("exp") for _ in range(50)}
    assert len(names) == 50


def test_reusing_a_run_name_with_another_config_is_refused(tmp_path, capsys, no_ray):
    cfg = experiment(tmp_path, "builtin:multidigits/train")
    ckpt = tmp_path / "runs" / "trials" / "mine" / "checkpoints" / "epoch_000001"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(json.dumps({"epoch": 1, "config_hash": "0123456789ab", "history": [],
                                                 "training_revision": TRAINING_REVISION}))
    code, _, err = run_cli(capsys, "train", write_yaml(tmp_path / "e.yaml", cfg), "--name", "mine")
    assert code == 2 and "run 'mine' already exists" in err and "\n" not in err, err


def live_process():
    """A live process on this host that is not this one (a stand-in for another `train` holding a run)."""
    import subprocess

    return subprocess.Popen(["sleep", "120"])


def write_lease(run_dir, *, pid, host=None, expires_in=60.0, owner="train run mine 0123"):
    import socket
    import time

    from orchestrator import processes

    run_dir.mkdir(parents=True, exist_ok=True)
    here = {"host_id": processes.host_id()} if host is None else {}   # this host and pid namespace, as acquire says
    (run_dir / "lease.json").write_text(json.dumps({"owner": owner, "host": host or socket.gethostname(), **here,
                                                   "pid": pid, "expires": time.time() + expires_in}))


def test_a_second_train_of_a_run_in_use_is_refused_naming_the_holder(tmp_path, capsys, no_ray):
    import socket

    other = live_process()
    try:
        write_lease(tmp_path / "runs" / "trials" / "mine", pid=other.pid)
        cfg = experiment(tmp_path, "builtin:multidigits/train")
        code, _, err = run_cli(capsys, "train", write_yaml(tmp_path / "e.yaml", cfg), "--name", "mine")
    finally:
        other.kill()
    assert code == 2 and "\n" not in err, err
    assert f"pid {other.pid}" in err and f"host {socket.gethostname()}" in err and "another name" in err, err
    assert not (tmp_path / "runs" / "trials" / "mine" / "config.json").exists()   # nothing written


def test_a_lease_is_exclusive_until_released(tmp_path):
    from orchestrator.training import lease

    run = str(tmp_path / "run")
    held = lease.acquire(run, what="train run a")
    with pytest.raises(lease.RunInUse, match=f"pid {os.getpid()}"):
        lease.acquire(run, what="train run b")
    held.release()
    assert not (tmp_path / "run" / "lease.json").exists()
    with lease.acquire(run, what="train run b") as again:
        assert lease.read(run)["owner"] == again.record["owner"]
    assert lease.read(run) is None


def test_a_run_folder_the_lease_made_and_nothing_else_used_is_removed_with_it(tmp_path):
    """train() refused once Ray was up (a run the cluster can never hold) left an empty trials/<run>/ folder, made for
    its lease (a helper's audit): a folder left empty when the lease goes is removed; one with a file stays."""
    from orchestrator.training import lease

    with pytest.raises(RuntimeError):
        with lease.acquire(str(tmp_path / "refused"), what="train run a"):
            raise RuntimeError("refused before anything was written")
    assert not (tmp_path / "refused").exists()
    with lease.acquire(str(tmp_path / "kept"), what="train run b"):
        (tmp_path / "kept" / "summary.json").write_text("{}")
    assert (tmp_path / "kept" / "summary.json").exists() and not (tmp_path / "kept" / "lease.json").exists()


def test_a_taker_whose_folder_went_with_the_last_lease_makes_it_again(tmp_path):
    """A lease's release removes its folder when left empty; a process about to create its lease there (folder made,
    file not yet) then met ENOENT, a raw OSError (this session's review of the change): it makes the folder again."""
    from orchestrator.training import lease

    run = tmp_path / "run"   # made by this taker's _try, then removed by the last holder's release
    record = {"owner": "train run b 1", "host": "h", "pid": os.getpid(), "expires": time.time() + 60}
    assert lease._try_local(str(run / "lease.json"), str(run), record) is None
    assert lease.read(str(run))["owner"] == "train run b 1"


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    from orchestrator.training import lease

    gone = live_process()
    gone.kill()
    gone.wait()
    write_lease(tmp_path / "run", pid=gone.pid, expires_in=55.0)
    with lease.acquire(str(tmp_path / "run"), what="train run b") as held:
        assert lease.read(str(tmp_path / "run"))["pid"] == os.getpid() == held.record["pid"]
    assert not (tmp_path / "run").exists()   # the stale lease was not left aside: the folder, empty, went with it


def test_two_takers_of_one_stale_lease_do_not_both_hold_it(tmp_path, monkeypatch):
    """B read the stale lease; A moved it aside and created its own (empty until A writes its record); B then moved
    A's new lease aside as if it were the stale one, found it unreadable, deleted it and created its own: both held
    the run folder (found by a helper's audit: 9 of 400 rounds of 2 racing processes, 15 of 4). Taking a lease over
    is now one step under a lock on the run folder. Here B pauses between its read and its take-over until A has
    created its lease (at most 2 s: with the lock, A waits for B instead)."""
    from orchestrator.training import lease

    gone = live_process()
    gone.kill()
    gone.wait()
    write_lease(tmp_path / "run", pid=gone.pid, expires_in=55.0)
    created, written = threading.Event(), threading.Event()
    real_fdopen, real_take_away = os.fdopen, lease._take_away

    def fdopen(fd, *args, **kwargs):   # A, between creating its lease and writing its record
        if threading.current_thread().name == "A":
            created.set()
            written.wait(5)
        return real_fdopen(fd, *args, **kwargs)

    def take_away(path, stale):        # B, between reading the stale lease and moving it aside
        if threading.current_thread().name == "B":
            created.wait(2)
            written.set()
        return real_take_away(path, stale)

    monkeypatch.setattr(lease.os, "fdopen", fdopen)
    monkeypatch.setattr(lease, "_take_away", take_away)
    got = {}

    def take(who):
        try:
            got[who] = lease.acquire(str(tmp_path / "run"), what=f"sweep {who}")
        except lease.RunInUse as e:
            got[who] = e

    threads = [threading.Thread(target=take, args=(who,), name=who) for who in "BA"]
    for t in threads:
        t.start()
        if t.name == "B":
            time.sleep(0.3)   # B is in its take-over before A starts
    for t in threads:
        t.join(20)
    held = [who for who, g in got.items() if isinstance(g, lease.Lease)]
    for g in got.values():
        if isinstance(g, lease.Lease):
            g.release()
    assert len(held) == 1, got
    assert isinstance(got["A" if held == ["B"] else "B"], lease.RunInUse)


def test_a_lease_held_from_another_pid_namespace_of_this_host_holds_until_it_expires(tmp_path):
    """A process in another pid namespace with this host's name (a --net=host container beside a shell on the host)
    saw every live holder's pid as gone and took its lease; the live holder then found its lease lost and stopped
    (reproduced with `unshare -Urpf`: a 4 s old lease taken, the live run ended with exit code 2). A holder is judged
    dead only by a process of its host and pid namespace; any other waits for the lease to expire, and so does one of
    a lease whose record does not say its namespace (older code)."""
    import socket
    import time

    from orchestrator import processes
    from orchestrator.training import lease

    gone = live_process()
    gone.kill()
    gone.wait()
    holder = {"owner": "train run r 0123", "host": socket.gethostname(), "host_id": "another pid namespace",
              "pid": gone.pid, "expires": time.time() + 30}
    assert not lease.is_stale(holder)
    assert lease.is_stale({**holder, "host_id": processes.host_id()})           # this namespace's dead process
    assert lease.is_stale({**holder, "expires": time.time() - 1})               # expired
    assert not lease.is_stale({k: v for k, v in holder.items() if k != "host_id"})
    with lease.acquire(str(tmp_path / "run"), what="train run b") as held:
        assert held.record["host_id"] == processes.host_id() and held.record["host"] == socket.gethostname()


def test_a_lease_from_another_host_holds_until_it_expires(tmp_path):
    from orchestrator.training import lease

    write_lease(tmp_path / "run", pid=1, host="elsewhere", expires_in=30.0)
    with pytest.raises(lease.RunInUse, match="host elsewhere, pid 1"):
        lease.acquire(str(tmp_path / "run"), what="train run b")
    write_lease(tmp_path / "run", pid=1, host="elsewhere", expires_in=-1.0)
    with lease.acquire(str(tmp_path / "run"), what="train run b"):
        assert lease.read(str(tmp_path / "run"))["host"] != "elsewhere"


def test_a_lease_where_older_code_kept_it_holds_while_written_to_and_only_then(tmp_path):
    """A sweep's driver of older code held its lease in the sweep's folder (``kept_before``), and when resumed, Ray
    Tune uploads its stale copy there every few seconds: old content (expired) with a fresh mtime. Any write counts
    as a renewal there. An expired lease, a dead pid of this host and a malformed record don't hold."""
    import time

    from orchestrator.training import lease

    own, old = str(tmp_path / "sweep" / "orchestrator"), tmp_path / "sweep"
    other = live_process()
    try:
        write_lease(old, pid=other.pid, host="elsewhere", expires_in=-300.0, owner="sweep s 0123")   # Tune's copy
        with pytest.raises(lease.RunInUse, match="in use by sweep s on host elsewhere"):
            lease.acquire(own, what="sweep s", kept_before=(str(old),))
        an_hour_ago = time.time() - 3600
        os.utime(old / "lease.json", (an_hour_ago, an_hour_ago))                 # not written for an hour
        lease.acquire(own, what="sweep s", kept_before=(str(old),)).release()
        write_lease(old, pid=other.pid, expires_in=60.0, owner="sweep s 0123")   # live, this host
        with pytest.raises(lease.RunInUse, match=f"pid {other.pid}"):
            lease.acquire(own, what="sweep s", kept_before=(str(old),))
    finally:
        other.kill()
        other.wait()
    lease.acquire(own, what="sweep s", kept_before=(str(old),)).release()        # its pid has ended
    for malformed in ('{"expires": null, "pid": 1}', '{"expires": "soon"}', '[1, 2]', '{"pid": "x"}'):
        (old / "lease.json").write_text(malformed)
        lease.acquire(own, what="sweep s", kept_before=(str(old),)).release()
    assert not os.path.exists(os.path.join(own, "lease.json")) and (old / "lease.json").exists()   # never written


def test_the_heartbeat_extends_the_lease_and_notices_a_takeover(tmp_path, monkeypatch):
    from orchestrator.training import lease

    from factories import wait_until

    monkeypatch.setattr(lease, "HEARTBEAT_S", 0.05)
    run = str(tmp_path / "run")
    held = lease.acquire(run, what="train run a")
    first = lease.read(run)["expires"]
    wait_until(lambda: lease.read(run)["expires"] > first, timeout_s=10, what="a heartbeat")
    write_lease(tmp_path / "run", pid=1, host="elsewhere", owner="train run thief 42")
    wait_until(lambda: held.lost, timeout_s=10, what="the holder notices the takeover")
    held.release()
    assert lease.read(run)["owner"] == "train run thief 42"     # not deleted: it is not ours any more


def test_a_takeover_between_a_heartbeats_read_and_its_write_is_not_overwritten(tmp_path, monkeypatch):
    """CI saw the holder miss a takeover: the thief wrote after the beat had read the lease as its own and before
    the beat wrote, and the beat's write replaced the thief's lease. Here the thief writes in exactly that gap."""
    from orchestrator.training import lease

    from factories import wait_until

    run = str(tmp_path / "run")
    real_read, gap = lease._read_or_raise, {"open": False}   # what the heartbeat reads with

    def read_then_thief_writes(run_dir):
        record = real_read(run_dir)
        if gap["open"] and threading.current_thread().name == "orchestrator-lease":
            gap["open"] = False
            write_lease(tmp_path / "run", pid=1, host="elsewhere", owner="train run thief 42")
        return record

    monkeypatch.setattr(lease, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(lease, "_read_or_raise", read_then_thief_writes)
    held = lease.acquire(run, what="train run a")
    gap["open"] = True
    wait_until(lambda: not gap["open"], timeout_s=10, what="a heartbeat")
    wait_until(lambda: held.lost, timeout_s=10, what="the holder notices the takeover")
    held.release()
    assert real_read(run)["owner"] == "train run thief 42"

def test_a_lease_on_s3_is_refused_while_held(s3_server, monkeypatch):
    import pyarrow.fs as pafs

    from orchestrator.training import lease

    monkeypatch.setattr(lease, "SETTLE_S", 0.05)
    pafs.S3FileSystem(access_key="k", secret_key="s", endpoint_override=s3_server, scheme="http",
                      region="us-east-1", allow_bucket_creation=True).create_dir("leases")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    run = f"s3://leases/trials/r?endpoint_override={s3_server}&scheme=http&region=us-east-1"
    with lease.acquire(run, what="train run a"):
        with pytest.raises(lease.RunInUse, match="train run a on host"):
            lease.acquire(run, what="train run b")
    assert lease.read(run) is None


@pytest.mark.parametrize("kept_by", ["this code", "older code"])
def test_resuming_a_sweep_whose_driver_still_runs_is_refused(tmp_path, capsys, no_ray, kept_by):
    """A driver of older code (before ``layout.sweep_own``) holds its sweep's lease in the sweep's folder itself."""
    from orchestrator.config import parse_config
    from orchestrator.sweep.resume import sweep_hash
    from orchestrator.training.session import resolve_storage

    cfg = experiment(tmp_path, "builtin:multidigits/train", search={
        "num_samples": 2, "space": {"train.head_lr": {"choice": [1e-3, 3e-3]}}})
    folder = tmp_path / "runs" / "sweeps" / "t" / "20260101-000000-abcdef"
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps({"config_hash": sweep_hash(resolve_storage(parse_config(cfg))),
                                                   "training_revision": TRAINING_REVISION}))
    other = live_process()
    try:
        held = layout.sweep_own(str(tmp_path / "runs"), "t", "20260101-000000-abcdef")
        write_lease(Path(held) if kept_by == "this code" else folder, pid=other.pid,
                    owner="sweep 20260101-000000-abcdef 0123")
        code, _, err = run_cli(capsys, "tune", write_yaml(tmp_path / "e.yaml", cfg), "--resume")
    finally:
        other.kill()
    assert code == 2 and "\n" not in err and f"pid {other.pid}" in err and "in use by sweep" in err, err


class FakeTrainee:
    """What ``loop._restored`` restores into: records the weights file it was given to load."""

    class Weighting:
        def restore(self, state):
            self.state = state

    def __init__(self):
        self.loaded, self.weighting = [], self.Weighting()

    def load(self, directory):
        with open(os.path.join(directory, "model.weights.h5")) as f:
            self.loaded.append(f.read())


def saved_run(tmp_path, epochs, *, config_hash):
    from orchestrator.training import checkpoints

    run = str(tmp_path / "run")
    for epoch in epochs:
        def write(d, epoch=epoch):
            with open(os.path.join(d, "model.weights.h5"), "w") as f:
                f.write(f"weights of epoch {epoch}")
        checkpoints.save(run, epoch, write, {"epoch": epoch, "history": [{"epoch": e} for e in range(1, epoch + 1)],
                                             "config_hash": config_hash, "weighting": {},
                                             "training_revision": TRAINING_REVISION})
    return run


def test_a_corrupt_latest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
    from orchestrator.config import parse_config
    from orchestrator.training.loop import Worker, _restored, _restorer
    from orchestrator.training.progress import attempts

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train"))
    run = saved_run(tmp_path, [1, 2], config_hash=cfg.config_hash())
    weights = tmp_path / "run" / "checkpoints" / "epoch_000002" / "model.weights.h5"
    weights.write_text("weights of epoch 2, bit-rotted")
    trainee = FakeTrainee()
    state = _restored(trainee, cfg, Worker(restore=_restorer(run, rank=0, world=1)), fingerprint=None, n_blocks=5)
    assert state["epoch"] == 1 and trainee.loaded == ["weights of epoch 1"], (state, trainee.loaded)
    assert attempts(run) == [1]
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "epoch 2" in err and "model.weights.h5 does not match its sha256" in err, err


def test_the_config_hash_is_checked_before_any_weight_is_read(tmp_path):
    from orchestrator.config import parse_config
    from orchestrator.errors import ConfigError
    from orchestrator.training.loop import Worker, _restored, _restorer

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train"))
    run = saved_run(tmp_path, [1], config_hash="0123456789ab")
    trainee = FakeTrainee()
    with pytest.raises(ConfigError, match="another config"):
        _restored(trainee, cfg, Worker(restore=_restorer(run, rank=0, world=1)), fingerprint=None, n_blocks=5)
    assert trainee.loaded == []


@pytest.fixture
def own_tmpdir(tmp_path, monkeypatch):
    """A temp dir of this test's own (TMPDIR and tempfile's cache): what is left in it afterwards was leaked."""
    import tempfile

    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_a_local_copy_of_a_remote_file_is_deleted_after_use(s3_server, own_tmpdir, monkeypatch):
    import pyarrow.fs as pafs

    from orchestrator import storage

    pafs.S3FileSystem(access_key="k", secret_key="s", endpoint_override=s3_server, scheme="http",
                      region="us-east-1", allow_bucket_creation=True).create_dir("copies")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    remote = f"s3://copies/backbone.keras?endpoint_override={s3_server}&scheme=http&region=us-east-1"
    storage.atomic_write(remote, b"model bytes")
    with storage.local_file(remote) as path:
        assert open(path, "rb").read() == b"model bytes" and path.startswith(str(own_tmpdir))
    assert list(own_tmpdir.iterdir()) == []


def test_the_tensorboard_writer_uses_no_temp_dir_so_a_killed_worker_leaves_nothing(tmp_path, own_tmpdir):
    """A worker killed mid-run (a trial ASHA stops: Ray kills its workers, no ``finally`` runs) left its local event
    folder, ``/tmp/tb-*``, for good: 225 of them piled up on this machine. The events are kept in memory."""
    from factories import scalar_steps
    from orchestrator.training.tensorboard import EpochBoard

    board = EpochBoard(str(tmp_path / "run"))
    for epoch in (1, 2):
        board.write({"epoch": epoch, "left_accuracy": 0.5, "train_loss": 1.0})
        assert list(own_tmpdir.iterdir()) == []                      # nothing a kill could leave behind
    assert scalar_steps(tmp_path / "run" / "tb") == {(tag, epoch) for tag in ("left/accuracy", "run/train_loss")
                                                     for epoch in (1, 2)}
    board.close()                                                    # never called when killed: nothing to do
    assert len(list((tmp_path / "run" / "tb").iterdir())) == 1


CHECKPOINTS_AND_THEN = """
import os, signal, sys, time
from orchestrator.training import checkpoints

def write_files(folder):
    with open(os.path.join(folder, "model.weights.h5"), "w") as f:
        f.write("weights")
    print("writing", flush=True)
    if sys.argv[2] == "killed":
        os.kill(os.getpid(), signal.SIGKILL)   # as Ray kills a stopped trial's worker: no finally runs
    time.sleep(120)

checkpoints.save(sys.argv[1], 1, write_files, {"epoch": 1})
"""


def test_what_a_killed_process_left_in_the_temp_dir_is_removed_by_the_next_one(tmp_path, own_tmpdir):
    """Ray kills a stopped trial's Train workers, and no ``finally`` runs in them: each left its copy of the shipped
    backbone (55 ``tmp*.keras`` files had piled up in this machine's /tmp; a VGG16 copy is 528 MB) and, when killed
    while writing a checkpoint, that checkpoint's local folder. The next process to make a temporary file removes
    what processes of this host and user that are gone left; a live one's stay."""
    import subprocess
    import sys

    from orchestrator.training import checkpoints

    def started(how):
        proc = subprocess.Popen([sys.executable, "-c", CHECKPOINTS_AND_THEN, str(tmp_path / how), how],
                                stdout=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(own_tmpdir)})
        assert proc.stdout.readline().strip() == "writing"
        return proc

    killed = started("killed")
    assert killed.wait(timeout=60) == -9
    (left,) = own_tmpdir.iterdir()                              # the checkpoint it was writing
    live = started("live")                                      # its checkpoint's folder replaces the killed one's
    try:
        (kept,) = own_tmpdir.iterdir()
        assert kept != left and [p.name for p in kept.iterdir()] == ["model.weights.h5"]
        checkpoints.save(str(tmp_path / "run"), 1, lambda d: open(os.path.join(d, "w.h5"), "w").close(), {})
        assert list(own_tmpdir.iterdir()) == [kept]               # a live process's scratch stays
    finally:
        live.kill()


def test_every_scalar_of_an_epoch_is_in_the_run_folder_when_write_returns(tmp_path):
    # CI saw run/objective (the epoch's last scalar) missing: tensorboardX queues events for a thread that writes
    # them, and its flush() flushes the file, not the queue, so the copy could miss the newest ones.
    from factories import scalar_steps
    from orchestrator.training.tensorboard import EpochBoard

    metrics = {"epoch": 1, **{f"task{i}_accuracy": i / 100 for i in range(60)}, "objective": 0.5}
    with EpochBoard(str(tmp_path / "run")) as board:
        for epoch in (1, 2):
            board.write({**metrics, "epoch": epoch})
            assert len(list((tmp_path / "run" / "tb").iterdir())) == 1
            assert scalar_steps(tmp_path / "run" / "tb") >= {("run/objective", epoch), ("task59/accuracy", epoch)}
    assert len(scalar_steps(tmp_path / "run" / "tb")) == 2 * 61


def test_loading_a_backbone_from_s3_leaves_no_copy_behind(s3_server, own_tmpdir, monkeypatch):
    import keras
    import pyarrow.fs as pafs

    from orchestrator import storage
    from orchestrator.model.backbones import load_model_file

    pafs.S3FileSystem(access_key="k", secret_key="s", endpoint_override=s3_server, scheme="http",
                      region="us-east-1", allow_bucket_creation=True).create_dir("models")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.save(own_tmpdir.parent / "tiny.keras")
    remote = f"s3://models/tiny.keras?endpoint_override={s3_server}&scheme=http&region=us-east-1"
    storage.atomic_write(remote, (own_tmpdir.parent / "tiny.keras").read_bytes())
    before = set(own_tmpdir.iterdir())
    assert load_model_file(remote, what="backbone").output_shape == (None, 2)
    assert set(own_tmpdir.iterdir()) == before, sorted(set(own_tmpdir.iterdir()) - before)


def test_a_run_resumed_after_epoch_2_trains_epoch_3_as_the_uninterrupted_run_does(tmp_path):
    """data.cache: memory shuffles with tf.data's reshuffle_each_iteration, whose order counts the dataset's
    iterations in this process: a run resumed at epoch 3 trained epoch 3 on epoch 1's order, so its epoch 3 differed
    from the uninterrupted run's. Through the real ``fit``: weights, optimizer and weighting state come back from the
    checkpoint, and epoch 3's training loss must be the uninterrupted run's."""
    import tensorflow as tf

    from factories import small_table, write_parquet
    from orchestrator.config import parse_config
    from orchestrator.data.pipeline import ArrayData, load_arrays
    from orchestrator.training.loop import Worker, fit

    cfg = parse_config(experiment(tmp_path, write_parquet(tmp_path / "d.parquet", small_table(96)),
                                  train={"epochs": 3, "batch_size": 8, "loss_weighting": "dwa"},
                                  heads={"hidden_units": 16, "dropout": 0.3}))   # dropout draws: training state too
    train, val, spec = load_arrays(cfg)
    strategy = tf.distribute.get_strategy()
    straight, saved = [], {}

    class Killed(Exception):
        pass

    fit(strategy, cfg, spec, ArrayData(cfg, spec, train, val),
        worker=Worker(on_epoch=lambda metrics, state, save: straight.append(metrics)))

    def dies_after_epoch_2(metrics, state, save):
        if metrics["epoch"] == 2:
            save(str(tmp_path)), saved.update(state)
            raise Killed

    with pytest.raises(Killed):
        fit(strategy, cfg, spec, ArrayData(cfg, spec, train, val), worker=Worker(on_epoch=dies_after_epoch_2))

    def restore(load, check):
        check(saved)
        load(str(tmp_path))
        return saved

    resumed = []
    fit(strategy, cfg, spec, ArrayData(cfg, spec, train, val),
        worker=Worker(restore=restore, on_epoch=lambda metrics, state, save: resumed.append(metrics)))
    assert [m["epoch"] for m in resumed] == [3]
    assert straight[2]["train_loss"] != straight[1]["train_loss"]
    assert resumed[0]["train_loss"] == pytest.approx(straight[2]["train_loss"], rel=1e-5)
    assert resumed[0]["mean_score"] == pytest.approx(straight[2]["mean_score"], abs=1e-6)


def test_a_run_or_sweep_is_not_resumed_on_other_data(tmp_path):
    """The config hash names the data's path, not its content: a run killed at epoch 1, its manifest then relabeled or
    its files rewritten, resumed epoch 1's weights (classes and label scaling from the old data) and its row then
    carried the new data's fingerprint. The checkpoint, the run and the sweep record the fingerprint; a resume on
    other data is refused before any weight is read, on the workers and on the driver."""
    from orchestrator import layout, storage
    from orchestrator.config import parse_config
    from orchestrator.errors import ConfigError
    from orchestrator.sweep.resume import find_sweep, sweep_hash
    from orchestrator.training import checkpoints
    from orchestrator.training.driver import check_run_name
    from orchestrator.training.loop import Worker, _restored, _restorer

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train"))
    run = str(tmp_path / "run")
    checkpoints.save(run, 1, lambda d: open(os.path.join(d, "model.weights.h5"), "w").write("w"),
                     {"epoch": 1, "history": [{"epoch": 1}], "config_hash": cfg.config_hash(), "weighting": {},
                      "data_fingerprint": "old-data", "training_revision": TRAINING_REVISION})
    trainee = FakeTrainee()
    with pytest.raises(ConfigError, match="other data"):
        _restored(trainee, cfg, Worker(restore=_restorer(run, rank=0, world=1)), fingerprint="new-data", n_blocks=5)
    assert trainee.loaded == []
    assert _restored(trainee, cfg, Worker(restore=_restorer(run, rank=0, world=1)), fingerprint="old-data",
                     n_blocks=5)["epoch"] == 1
    named = layout.run_dir(cfg.storage, "mine")
    checkpoints.save(named, 1, lambda d: open(os.path.join(d, "model.weights.h5"), "w").write("w"),
                     {"epoch": 1, "history": [], "config_hash": cfg.config_hash(), "data_fingerprint": "old-data",
                      "training_revision": TRAINING_REVISION})
    with pytest.raises(ConfigError, match="other data"):
        check_run_name(cfg, "mine", fingerprint="new-data", n_blocks=5)
    check_run_name(cfg, "mine", fingerprint="old-data", n_blocks=5)
    sweep = cfg.with_values({"search": {"space": {"train.head_lr": {"choice": [0.001, 0.01]}}}})
    storage.atomic_write(layout.sweep_record(sweep.storage, sweep.name, "s1"), json.dumps(
        {"sweep_id": "s1", "config_hash": sweep_hash(sweep), "data_fingerprint": "old-data",
         "training_revision": TRAINING_REVISION}).encode())
    with pytest.raises(ConfigError, match="other data"):
        find_sweep(sweep, None, fingerprint="new-data")
    assert find_sweep(sweep, None, fingerprint="old-data") == "s1"


LOSES_ITS_LEASE = """
import json, signal, sys, time
from orchestrator.training import lease
lease.HEARTBEAT_S = 0.05
run = sys.argv[1]
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])   # as Ray starts job entrypoints: SIGINT blocked
with lease.acquire(run, what="train run a"):
    with open(run + "/lease.json", "w") as f:   # another process took the folder over
        json.dump({"owner": "train run thief 42", "host": "elsewhere", "pid": 1, "expires": time.time() + 60}, f)
    time.sleep(30)   # the run's work
print("still running")
"""


def test_a_holder_that_lost_its_lease_ends_at_once_with_one_line(tmp_path):
    """A holder whose beats failed for EXPIRY_S (storage throttling, a suspended driver) looks dead, and another
    `train --name` or `tune --resume` takes the folder over; the old holder went on training and writing
    checkpoints beside the new one (and deleting its checkpoints). It now ends at once, as the taker assumed it
    had, with one line naming the new holder: no Tune or Train shutdown writes into the folder, and it works where
    SIGINT is blocked (Ray job entrypoints)."""
    import subprocess
    import sys

    from orchestrator.training import lease

    run = tmp_path / "run"
    run.mkdir()
    done = subprocess.run([sys.executable, "-c", LOSES_ITS_LEASE, str(run)], capture_output=True, text=True,
                          timeout=60)
    assert "still running" not in done.stdout   # ended during its 30 s of work, not after it
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: train run a"), done.stderr
    assert "lost" in done.stderr and "train run thief 42" in done.stderr
    assert lease.read(str(run))["owner"] == "train run thief 42"


def test_a_failed_read_of_the_lease_is_not_a_takeover(tmp_path, monkeypatch):
    """One failed read (an S3 503) came back as "no lease", which counted as lost: a healthy run was stopped and its
    lease deleted. Only a readable lease naming another owner is a takeover."""
    from orchestrator import storage
    from orchestrator.training import lease

    from factories import wait_until

    monkeypatch.setattr(lease, "HEARTBEAT_S", 0.05)
    real, failures = storage.read_bytes, {"left": 3}

    def flaky(location):
        if failures["left"] and location.endswith("lease.json"):
            failures["left"] -= 1
            raise OSError("503 Slow Down")
        return real(location)

    run = str(tmp_path / "run")
    held = lease.acquire(run, what="train run a")
    monkeypatch.setattr(storage, "read_bytes", flaky)   # the heartbeat's reads fail three times
    wait_until(lambda: failures["left"] == 0, timeout_s=10, what="three failed reads")
    first = lease.read(run)["expires"]
    wait_until(lambda: lease.read(run)["expires"] > first, timeout_s=10, what="a heartbeat after them")
    assert not held.lost
    held.release()
    assert lease.read(run) is None


def test_a_run_or_sweep_of_older_code_is_refused_as_such(tmp_path):
    """After an upgrade that changed what a config trains (TRAINING_REVISION), `train --name` of an older run said
    "already exists with another config" of the same config, and `tune --resume` of an older sweep passed, then
    failed every unfinished trial with that line. Both now say that older code made them."""
    from orchestrator import layout, storage
    from orchestrator.config import parse_config
    from orchestrator.errors import ConfigError
    from orchestrator.sweep.resume import find_sweep, sweep_hash
    from orchestrator.training import checkpoints
    from orchestrator.training.driver import check_run_name
    from orchestrator.training.loop import Worker, _restored, _restorer

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train"))
    named = layout.run_dir(cfg.storage, "old")
    checkpoints.save(named, 1, lambda d: open(os.path.join(d, "model.weights.h5"), "w").write("w"),
                     {"epoch": 1, "history": [], "config_hash": "0123456789ab", "weighting": {}})   # no revision: 1
    with pytest.raises(ConfigError, match="older code .*training revision 1"):
        check_run_name(cfg, "old", fingerprint=None, n_blocks=5)
    with pytest.raises(ConfigError, match="older code"):
        _restored(FakeTrainee(), cfg, Worker(restore=_restorer(named, rank=0, world=1)), fingerprint=None, n_blocks=5)
    sweep = cfg.with_values({"search": {"space": {"train.head_lr": {"choice": [0.001, 0.01]}}}})
    storage.atomic_write(layout.sweep_record(sweep.storage, sweep.name, "s1"), json.dumps(
        {"sweep_id": "s1", "config_hash": sweep_hash(sweep)}).encode())
    with pytest.raises(ConfigError, match="older code .*start a new sweep"):
        find_sweep(sweep, None, fingerprint=None)


def test_a_task_named_like_a_run_field_keeps_its_metrics_in_history_and_tensorboard(tmp_path):
    """Run fields were left out of a row's history and the event file by prefix ("status", "rank" for rank0_steps,
    "epoch"): a task named status, ranking or epochs lost every metric there, and work reused from the row then had no
    score for it (Δm% NaN, its columns null). Found by a helper's audit."""
    from factories import scalar_steps
    from orchestrator.leaderboard.rows import compact_epoch
    from orchestrator.training.tensorboard import EpochBoard

    epoch = {"epoch": 1, "status": "running", "config_hash": "abc", "world_size": 2, "rank0_steps": 4,
             "rank1_peak_rss_mb": 900.0, "steps_per_epoch": 4, "examples_per_s": 100.0, "status_accuracy": 0.8,
             "ranking_mae": 0.5, "epochs_r2": 0.3, "world_size_accuracy": 0.6, "objective": 0.7}
    tasks = {"status_accuracy": 0.8, "ranking_mae": 0.5, "epochs_r2": 0.3, "world_size_accuracy": 0.6}
    assert compact_epoch(epoch) == {"epoch": 1, **tasks, "objective": 0.7}
    with EpochBoard(str(tmp_path / "run")) as board:
        board.write(epoch)
    assert scalar_steps(tmp_path / "run" / "tb") == {(tag, 1) for tag in (
        "status/accuracy", "ranking/mae", "epochs/r2", "world_size/accuracy", "run/objective", "run/examples_per_s")}


def test_a_run_restored_at_an_epoch_says_that_epochs_scores_again(tmp_path):
    """A worker that died after saving the last epoch's checkpoint and before reporting it: the restarted run restored
    that epoch, trained nothing and reported nothing, so the trial's row kept the epoch before (its scores, and
    'stopped early by the scheduler' for a run that had finished). The restored epoch's metrics are handed on again
    (``on_resumed``; the driver keeps each epoch once). Through the real ``fit``. Found by a helper's audit."""
    import tensorflow as tf

    from factories import small_table, write_parquet
    from orchestrator.config import parse_config
    from orchestrator.data.pipeline import ArrayData, load_arrays
    from orchestrator.training.loop import Worker, fit

    cfg = parse_config(experiment(tmp_path, write_parquet(tmp_path / "d.parquet", small_table(96)),
                                  train={"epochs": 2, "batch_size": 8}, heads={"hidden_units": 16}))
    train, val, spec = load_arrays(cfg)
    saved = {}

    def keep(metrics, state, save):
        save(str(tmp_path)), saved.update(state)

    fit(tf.distribute.get_strategy(), cfg, spec, ArrayData(cfg, spec, train, val), worker=Worker(on_epoch=keep))

    def restore(load, check):
        check(saved)
        load(str(tmp_path))
        return saved

    trained, resumed = [], []
    fit(tf.distribute.get_strategy(), cfg, spec, ArrayData(cfg, spec, train, val),
        worker=Worker(restore=restore, on_epoch=lambda m, s, save: trained.append(m),
                      on_resumed=lambda m, s: resumed.append(m)))
    assert trained == [] and [m["epoch"] for m in resumed] == [2]
    assert resumed[0]["objective"] == saved["history"][-1]["objective"]


def test_resume_finds_the_latest_sweep_that_started_not_a_start_that_failed(tmp_path):
    """A sweep that failed to start (an unreachable cluster, a run that never fits) left a folder without sweep.json,
    the latest one: every `tune --resume` then said "sweep ... has no sweep.json: it cannot be resumed", and through
    submit (no --sweep) the real sweep could not be resumed at all. Found by a helper's audit."""
    import json

    from orchestrator import layout, storage
    from orchestrator.config import parse_config
    from orchestrator.errors import ConfigError
    from orchestrator.sweep.resume import find_sweep, sweep_hash

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train",
                                  search={"space": {"train.head_lr": {"choice": [0.001, 0.01]}}}))
    storage.atomic_write(layout.sweep_record(cfg.storage, cfg.name, "20260101-000000-aaaaaa"), json.dumps(
        {"sweep_id": "20260101-000000-aaaaaa", "config_hash": sweep_hash(cfg), "data_fingerprint": "fp",
         "training_revision": TRAINING_REVISION}).encode())
    stub = layout.sweep_dir(cfg.storage, cfg.name, "20260102-000000-bbbbbb")
    storage.atomic_write(storage.join(stub, "config.json"), b"{}")          # a start that failed
    assert find_sweep(cfg, None, fingerprint="fp") == "20260101-000000-aaaaaa"
    with pytest.raises(ConfigError, match="has no sweep.json"):
        find_sweep(cfg, "20260102-000000-bbbbbb", fingerprint="fp")       # named, it says why
    # and it says which newer sweep it passed over: one killed during its baselines resumed an older, finished sweep
    # and exited 0 without a word (found by a helper's audit)
    said = []
    assert find_sweep(cfg, None, fingerprint="fp", say=said.append) == "20260101-000000-aaaaaa"
    assert len(said) == 1 and "20260102-000000-bbbbbb" in said[0] and "never started" in said[0], said


def test_the_python_apis_train_checks_its_run_name_as_the_cli_does(tmp_path, no_ray):
    """Only the CLI checked a run's name: orchestrator.train(cfg, name="../sweeps/exp/<id>") wrote into a sweep's own
    folder, and name="<sweep id>-<trial id>" into a live sweep's trial run. Found by a helper's audit."""
    import orchestrator
    from orchestrator.config import parse_config
    from orchestrator.errors import ConfigError

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train"))
    for name in ("../sweeps/t/20260101-000000-aaaaaa", "20260101-000000-aaaaaa-1a2b3_00000"):
        with pytest.raises(ConfigError, match="not a run name|names a sweep's trial run"):
            orchestrator.train(cfg, name=name)
    assert not (tmp_path / "sweeps").exists()


@pytest.mark.slow
def test_the_python_apis_train_refuses_a_run_the_cluster_can_never_hold_and_takes_a_path(tmp_path, ray_session):
    """orchestrator.train(cfg) with cpus_per_worker 64 waited forever ("waits for resources" every 30 s, deaf to
    Ctrl-C): only the CLI passed its capacity check. A YAML path was an AttributeError ('str' has no 'storage').
    Found by a helper's audit."""
    import orchestrator
    from orchestrator.errors import ConfigError

    path = write_yaml(tmp_path / "e.yaml", experiment(tmp_path, "builtin:multidigits/train",
                                                       resources={"workers": 1, "cpus_per_worker": 64}))
    for given in (path, orchestrator.load_config(path)):
        with pytest.raises(ConfigError, match="cpus_per_worker"):
            orchestrator.train(given)
    trials = tmp_path / "runs" / "trials"   # no empty run folder left behind (this session's audit)
    assert not trials.exists() or not any(trials.iterdir()), list(trials.iterdir())


API_SIGNALS = """
import json, os, signal, sys, threading, time
import orchestrator
from orchestrator import layout
from orchestrator.errors import Interrupted
from orchestrator.training.progress import read_progress

cfg = json.loads(sys.argv[1])
before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGUSR1)}
kept = lambda: all(signal.getsignal(s) is h for s, h in before.items())
import logging
import optuna
from ray.data import DataContext
optuna.logging.get_verbosity()   # a user of Optuna: its logger as Optuna sets it
LOGGERS = ("ray", "ray.data", "ray.train", "ray.util", "absl", "tensorflow", "optuna")
SET_BY_RUNS = ("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "TUNE_GLOBAL_CHECKPOINT_S",
               "RAY_idle_worker_killing_time_threshold_ms", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "TF_CPP_MIN_LOG_LEVEL",
               "RAY_AIR_NEW_OUTPUT")   # what the audit found left set (and Tune's reporter switch)
process = lambda: ({k: os.environ.get(k) for k in SET_BY_RUNS}, {n: logging.getLogger(n).level for n in LOGGERS},
                   DataContext.get_current().enable_progress_bars)
found = process()
orchestrator.train(cfg, out=lambda line: None)
print("after train", kept(), flush=True)
orchestrator.tune({**cfg, "name": "swept", "search": {"space": {"train.head_lr": {"choice": [0.01]}}, "num_samples": 1}},
                  out=lambda line: None)
print("after tune", kept(), flush=True)
print("process as found", process() == found or [(k, v) for k, v in process()[0].items() if found[0].get(k) != v]
      + [process()[1:], found[1:]], flush=True)


def ctrl_c():   # what Ctrl-C sends, once the long run has trained an epoch
    run = layout.run_dir(cfg["storage"], "long")
    deadline = time.time() + 300
    while time.time() < deadline and (read_progress(run) or {}).get("epoch", 0) < 1:
        time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGINT)


threading.Thread(target=ctrl_c, daemon=True).start()
try:
    orchestrator.train({**cfg, "train": {**cfg["train"], "epochs": 60}}, name="long", out=lambda line: None)
    print("returned", flush=True)
except Interrupted as e:
    print("interrupted:", e, flush=True)
print("after ctrl-c", kept(), flush=True)
"""


@pytest.mark.slow
def test_the_python_api_leaves_the_callers_ctrl_c_as_it_found_it(tmp_path):
    """Ray Train's fit() and Ray Tune's set their own SIGINT (Tune: SIGUSR1 too) handlers and leave them: after
    orchestrator.train() a notebook's Ctrl-C was swallowed and the third raised SystemExit; a Ctrl-C during train()
    raised SystemExit, not Interrupted (found by a helper's audit). The caller's handlers are back after each call,
    and Ctrl-C during train() raises Interrupted naming how to continue. So are the environment (Ray Train/Tune and
    TensorFlow settings stayed set), the levels of the loggers a run quiets and Ray Data's progress bars; and
    tune() prints no Tune boxes, as the CLI does not (the same audit)."""
    import subprocess
    import sys

    from factories import embedded

    cfg = embedded(tmp_path / "runs", resources={"workers": 1, "cpus_per_worker": 1})
    done = subprocess.run([sys.executable, "-c", API_SIGNALS, json.dumps(cfg)], capture_output=True, text=True,
                          timeout=900, cwd=tmp_path)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(("after", "returned", "interrupted", "process"))]
    assert lines[:3] == ["after train True", "after tune True", "process as found True"], \
        done.stdout[-2000:] + done.stderr[-3000:]
    assert "Configuration for experiment" not in done.stdout + done.stderr   # Tune's boxes: the CLI printed none
    assert "A new study created" not in done.stderr                           # Optuna's: in the CLI's log file
    lines = lines[1:]
    assert lines[2].startswith("interrupted: interrupted (Ctrl-C): run long stopped") and "name='long'" in lines[2], \
        done.stdout[-2000:] + done.stderr[-3000:]
    assert lines[3] == "after ctrl-c True" and done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_an_address_other_than_the_ray_this_process_runs_is_refused(tmp_path, ray_session):
    """Once Ray ran in the process (an earlier train() started it), address= was ignored: train(cfg,
    address="127.0.0.1:1") trained on the local Ray and returned completed, where the CLI refuses an address that
    takes no connection (found by a helper's audit). The Ray already joined is accepted by its address too."""
    from orchestrator.errors import ConfigError
    from orchestrator.training.session import init_ray

    with pytest.raises(ConfigError, match="Ray already runs in this process .* cannot also join 127.0.0.1:1"):
        init_ray("127.0.0.1:1")
    gcs = ray_session.get_runtime_context().gcs_address
    for same in (gcs, f"localhost:{gcs.rpartition(':')[2]}", "local", "auto", None):   # the review: by name too
        init_ray(same)


def test_the_python_apis_errors_name_the_argument_not_only_the_flag(tmp_path, no_ray):
    """API calls' errors told a notebook user to pass CLI flags: tune(cfg, resume=True) with no sweep said "run it
    without --resume first", train(cfg, name="../x") "--name '../x' is not a run name" (a helper's audit). They name
    the Python argument too."""
    import orchestrator
    from orchestrator.config import parse_config
    from orchestrator.errors import ConfigError

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train",
                                  search={"space": {"train.head_lr": {"choice": [0.01, 0.02]}}}))
    with pytest.raises(ConfigError, match=r"without --resume \(Python: resume=False\) first"):
        orchestrator.tune(cfg, resume=True)
    with pytest.raises(ConfigError, match=r"--name \(name=\) '\.\./x' is not a run name"):
        orchestrator.train(cfg, name="../x")


def test_a_sweep_started_before_a_depth_of_every_block_ran_as_all_resumes(tmp_path):
    """A depth of every block now runs as 'all' (config.freezing.every_block_as_all), which changes the sweep's hash:
    `tune --resume` of a sweep started before, with the same config, was refused as "started with another config"
    (this session's review). The config it was started with, read the same way, is the same config; another is not."""
    from orchestrator.config import parse_config
    from orchestrator.config.freezing import every_block_as_all
    from orchestrator.errors import ConfigError
    from orchestrator.sweep.resume import find_sweep, sweep_hash

    space = {"train.freeze_depth": {"choice": [0, 5]}, "train.head_lr": {"choice": [0.001, 0.01]}}
    given = parse_config(experiment(tmp_path, "builtin:multidigits/train", search={"space": space}))
    _saved_sweep(given)   # as the code before wrote it
    today = every_block_as_all(given, 5)
    assert sweep_hash(today) != sweep_hash(given)
    assert find_sweep(today, None, fingerprint=None, n_blocks=5) == "s1"
    other = today.with_values({"train.epochs": 3})
    with pytest.raises(ConfigError, match="started with another config"):
        find_sweep(other, None, fingerprint=None, n_blocks=5)


def test_a_run_checkpointed_before_a_depth_of_every_block_ran_as_all_continues(tmp_path):
    """A depth of every block now runs as 'all' (config.freezing.every_block_as_all), which changes the config hash:
    `train cfg --name R` of a run checkpointed before, with the same config (freeze_depth 5 of 5 blocks, its own
    backbone_lr), was refused as "already exists with another config", and its workers would have refused the
    checkpoint the same way. The hash the config had as written is the same work; another config is still refused."""
    from orchestrator.config import parse_config
    from orchestrator.config.freezing import every_block_as_all
    from orchestrator.errors import ConfigError
    from orchestrator.training import checkpoints
    from orchestrator.training.driver import check_run_name
    from orchestrator.training.loop import Worker, _restored, _restorer

    given = parse_config(experiment(tmp_path, "builtin:multidigits/train",
                                    train={"freeze_depth": 5, "backbone_lr": 0.003}))
    today = every_block_as_all(given, 5)
    assert today.config_hash() != given.config_hash()
    named = layout.run_dir(given.storage, "old")
    checkpoints.save(named, 1, lambda d: open(os.path.join(d, "model.weights.h5"), "w").write("weights of epoch 1"),
                     {"epoch": 1, "history": [], "config_hash": given.config_hash(), "weighting": {},
                      "training_revision": TRAINING_REVISION})   # as the code before wrote it
    check_run_name(today, "old", fingerprint=None, n_blocks=5)
    trainee = FakeTrainee()
    state = _restored(trainee, today, Worker(restore=_restorer(named, rank=0, world=1)), fingerprint=None, n_blocks=5)
    assert state["epoch"] == 1 and trainee.loaded == ["weights of epoch 1"], (state, trainee.loaded)
    other = today.with_values({"train.epochs": 3})
    with pytest.raises(ConfigError, match="another config"):
        check_run_name(other, "old", fingerprint=None, n_blocks=5)
    with pytest.raises(ConfigError, match="another config"):
        _restored(FakeTrainee(), other, Worker(restore=_restorer(named, rank=0, world=1)), fingerprint=None,
                  n_blocks=5)


def test_a_resumed_runs_summary_says_its_steps_and_time_are_since_the_last_start():
    """`train --name E` resumed at epoch 2 of 5 printed "steps per rank [93, 93], epochs 5, 28.4 s" beside an
    uninterrupted run's "[155, 155], epochs 5, 53.1 s": the steps and seconds of the last start only, read as the
    whole run's. Found by a helper's audit."""
    from orchestrator.cli.run import summary_text

    s = {"run": "E", "status": "completed", "tasks": {}, "objective": 0.7294, "objective_metric": "mean_score",
         "world_size": 2, "rank_steps": [93, 93], "epochs": 5, "wall_time_s": 28.4, "checkpoint": "c",
         "summary_file": "s", "attempts": [0, 2]}
    text = summary_text(s)
    assert "steps per rank [93, 93] since its last start (epoch 2), epochs 5, 28.4 s in this command" in text, text
    assert "steps per rank [155, 155], epochs 5, 53.1 s" in summary_text(
        {**s, "rank_steps": [155, 155], "wall_time_s": 53.1, "attempts": [0]})


def _saved_sweep(cfg) -> None:
    """Sweep s1 of ``cfg`` as a sweep.json records it (its config and hash)."""
    from orchestrator import storage
    from orchestrator.sweep.resume import sweep_hash

    storage.atomic_write(layout.sweep_record(cfg.storage, cfg.name, "s1"), json.dumps(
        {"sweep_id": "s1", "config_hash": sweep_hash(cfg), "config": cfg.public_dump(),
         "training_revision": TRAINING_REVISION}).encode())


def _saved_run(cfg) -> None:
    """Run R of ``cfg`` checkpointed at epoch 1, with its config.json."""
    from orchestrator import storage
    from orchestrator.training import checkpoints

    run = layout.run_dir(cfg.storage, "R")
    checkpoints.save(run, 1, lambda d: open(os.path.join(d, "model.weights.h5"), "w").write("w"),
                     {"epoch": 1, "history": [], "config_hash": cfg.config_hash(), "weighting": {},
                      "training_revision": TRAINING_REVISION})
    storage.atomic_write(os.path.join(run, layout.CONFIG_FILE), json.dumps(cfg.public_dump()).encode())


def test_a_refused_resume_names_the_fields_that_changed(tmp_path):
    """`tune --resume --set search.num_samples=5` and `train --name R` with other epochs said only "started with
    another config (hash b43c..., this 674f...)": which field changed was left to the user. Found by a helper's
    audit."""
    from orchestrator.config import parse_config
    from orchestrator.errors import ConfigError
    from orchestrator.sweep.resume import find_sweep
    from orchestrator.training.driver import check_run_name

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train",
                                  search={"space": {"train.head_lr": {"choice": [0.001, 0.01]}}, "num_samples": 4}))
    _saved_sweep(cfg)
    with pytest.raises(ConfigError, match=r"started with another config \(search.num_samples: 4 → 5;"):
        find_sweep(cfg.with_values({"search.num_samples": 5}), None, fingerprint=None, n_blocks=5)
    _saved_run(cfg)
    other = cfg.with_values({"train.epochs": 3, "train.head_lr": 0.01, "resources.workers": 2})
    with pytest.raises(ConfigError, match=r"another config \(resources.workers: 1 → 2, train.epochs: 1 → 3, "
                                          r"train.head_lr: 0.001 → 0.01; checkpoint"):
        check_run_name(other, "R", fingerprint=None, n_blocks=5)


def test_a_resumed_sweeps_summary_says_its_seconds_are_this_commands():
    """`tune --resume` printed "... 6 trials {...} in 12.3 s": this command's seconds, read as the sweep's (as `train`'s
    summary did after a resume). Found by a review of this stop's diff."""
    from orchestrator.cli.run import sweep_line

    s = {"experiment": "e", "sweep_id": "s1", "trials": 6, "statuses": {"completed": 6}, "reused": [],
         "wall_time_s": 12.3, "leaderboard": "runs/leaderboard"}
    assert "6 trials {'completed': 6} in 12.3 s in this command (a resumed sweep);" in sweep_line(s, resumed=True)
    assert "6 trials {'completed': 6} in 12.3 s; leaderboard" in sweep_line(s, resumed=False)


def test_the_fields_a_refused_resume_names_are_read_as_today_reads_them(tmp_path):
    """A sweep or run started before a depth of every block ran as 'all' named fields the user never changed:
    "search.num_samples: 4 → 5, train.freeze_depth: 5 → "all"" and, for a run, backbone_lr and freeze_depth beside
    the epochs it did change (a review of this stop's diff)."""
    from orchestrator.config import parse_config
    from orchestrator.config.freezing import every_block_as_all
    from orchestrator.errors import ConfigError
    from orchestrator.sweep.resume import find_sweep
    from orchestrator.training.driver import check_run_name

    given = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"freeze_depth": 5,
                                                                                  "backbone_lr": 0.003},
                                    search={"space": {"train.head_lr": {"choice": [0.001, 0.01]}}, "num_samples": 4}))
    _saved_sweep(given)   # as the code before wrote it
    today = every_block_as_all(given, 5)
    with pytest.raises(ConfigError, match=r"another config \(search.num_samples: 4 → 5; hash") as info:
        find_sweep(today.with_values({"search.num_samples": 5}), None, fingerprint=None, n_blocks=5)
    assert "freeze_depth" not in str(info.value), info.value
    _saved_run(given)
    with pytest.raises(ConfigError, match=r"another config \(train.epochs: 1 → 3; checkpoint"):
        check_run_name(today.with_values({"train.epochs": 3}), "R", fingerprint=None, n_blocks=5)


def test_a_refused_resume_of_a_config_listing_a_depth_both_ways_says_another_config(tmp_path):
    """A sweep or run saved with a space listing 5 and 'all' (5 blocks; refused since): reading its saved config the
    way today reads one raised that refusal, so `tune --resume` or `train --name` with today's config was told to
    list one, of a config already mended, not that it is another config (a review of this stop's diff)."""
    from orchestrator.config import parse_config
    from orchestrator.errors import ConfigError
    from orchestrator.sweep.resume import find_sweep
    from orchestrator.training.driver import check_run_name

    given = parse_config(experiment(tmp_path, "builtin:multidigits/train",
                                    search={"space": {"train.freeze_depth": {"choice": [0, 5, "all"]}}}))
    today = given.with_values({"search.space": {"train.freeze_depth": {"choice": [0, "all"]}}})
    _saved_sweep(given)
    with pytest.raises(ConfigError, match="sweep s1 was started with another config"):
        find_sweep(today, None, fingerprint=None, n_blocks=5)
    _saved_run(given)
    with pytest.raises(ConfigError, match=r"run 'R' already exists with another config \(train.epochs: 1 → 3"):
        check_run_name(today.with_values({"train.epochs": 3}), "R", fingerprint=None, n_blocks=5)
