"""Synchronous successive halving and the searchers' view of failures, on real Ray Tune with a trainable that needs
no TensorFlow: each trial keeps its own "checkpoint" (the last epoch done) in a file, as its Train run would."""
import json
import os
import time

import pytest

from orchestrator.sweep.syncsha import SyncHalving, rungs_for

QUALITY = [0.3, 0.9, 0.5, 0.7, 0.1, 0.6]   # trial i's objective at epoch e: QUALITY[i] * e / 6


def run_sync(tmp_path, delays):
    from ray import tune

    def toy_trial(config):
        """Resumes from its own record like a Train run from its checkpoint; notes every (re)start's epoch."""
        import json
        import time

        record = f"{config['dir']}/{config['i']}.json"
        try:
            with open(record) as f:
                state = json.load(f)
        except OSError:
            state = {"epoch": 0, "starts": []}
        state["starts"].append(state["epoch"])
        for epoch in range(state["epoch"] + 1, 7):
            time.sleep(config["delays"][config["i"]])
            state["epoch"] = epoch
            with open(record, "w") as f:
                json.dump(state, f)
            tune.report({"epoch": epoch, "objective": config["quality"][config["i"]] * epoch / 6})

    from orchestrator.sweep.searchers import GatedVariants

    scheduler = SyncHalving(max_t=6, grace_period=1, reduction_factor=3, trials=6, concurrent=2, mode="max")
    searcher = GatedVariants(scheduler.has_room, random_state=0, max_concurrent=0, points_to_evaluate=None)
    tmp_path.mkdir()
    tuner = tune.Tuner(
        tune.with_resources(toy_trial, {"CPU": 0.05}),
        param_space={"i": tune.grid_search(list(range(6))), "dir": str(tmp_path), "delays": delays,
                     "quality": QUALITY},
        tune_config=tune.TuneConfig(metric="objective", mode="max", scheduler=scheduler, search_alg=searcher),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0))
    results = tuner.fit()
    states = {}
    for i in range(6):
        with open(tmp_path / f"{i}.json") as f:
            states[i] = json.load(f)
    return results, states


class FakeTrial:
    def __init__(self, trial_id):
        self.trial_id, self.status, self.epoch = trial_id, "PENDING", 0


class FakeController:
    """What SyncHalving asks of Tune's controller: the trials, and stopping one (Tune then removes it)."""

    def __init__(self, scheduler):
        self.trials, self.scheduler = [], scheduler

    def get_trials(self):
        return self.trials

    def stop_trial(self, trial):
        trial.status = "TERMINATED"
        self.scheduler.on_trial_remove(self, trial)


def simulate(order_seed: int, quality: list, *, concurrent: int = 2, expect: int = 0, ahead: int = 0) -> dict:
    """Tune's loop in miniature (``sweep_steps``) over trials whose objective at epoch e is quality * e / 6 (+ 0.05
    past epoch 1); ``ahead``: a paused trial's run trains up to that many epochs on before it stops."""
    import random

    def curve(tid):   # a trial's own record (what its run's progress file holds)
        q = quality[int(tid[1:])]
        return [{"epoch": e, "objective": q * e / 6 + 0.05 * (e > 1)} for e in range(1, 7)]

    s = SyncHalving(max_t=6, grace_period=1, reduction_factor=3, trials=expect or len(quality),
                    concurrent=concurrent, mode="max", history=curve)
    c = FakeController(s)
    assert sweep_steps(s, c, random.Random(order_seed), list(range(len(quality))), concurrent=concurrent,
                       curve=curve, ahead=ahead)
    simulate.promoted = [sorted(p) for p in s.promoted]
    return {t.trial_id: t.epoch for t in c.trials}


def sweep_steps(s, c, rng, todo, *, concurrent: int, curve, ahead: int = 0, stop=lambda: False,
                epochs=lambda tid: 6) -> bool:
    """Tune's loop in miniature, until the sweep ends (True) or ``stop()`` (False): the searcher adds trials while
    ``has_room``, PENDING trials start, one running trial (picked at random: any report order) reports its next
    epoch, and the scheduler's answer is applied. ``epochs``: a trial's own budget (a resumed trial already there
    reports its last epoch again, and ends)."""
    from ray.tune.schedulers import TrialScheduler

    for _ in range(10_000):
        if stop():
            return False
        while todo and s.has_room():
            trial = FakeTrial(f"t{todo.pop(0)}")
            c.trials.append(trial)
            s.on_trial_add(c, trial)
        chosen = s.choose_trial_to_run(c)
        if chosen is not None:
            chosen.status = "PENDING"
        for trial in c.trials:
            trial.status = "RUNNING" if trial.status == "PENDING" else trial.status
        running = [t for t in c.trials if t.status == "RUNNING"]
        assert len(running) <= concurrent
        if not running:
            if any(t.status == "PAUSED" for t in c.trials):
                continue   # Tune's next step
            return True
        trial = rng.choice(running)
        trial.epoch = min(trial.epoch + 1, epochs(trial.trial_id))
        action = s.on_trial_result(c, trial, curve(trial.trial_id)[trial.epoch - 1])
        if action == TrialScheduler.PAUSE:
            trial.status = "PAUSED"
            trial.epoch = min(5, trial.epoch + rng.randint(0, ahead))   # its run trained on before it stopped
        elif action == TrialScheduler.STOP or trial.epoch == epochs(trial.trial_id):
            trial.status = "TERMINATED"
            s.on_trial_complete(c, trial, {})
    raise AssertionError("the sweep never ended")


def test_sync_halving_decides_the_same_whatever_the_report_order():
    quality = [0.3, 0.9, 0.5, 0.7, 0.1, 0.6, float("nan"), 0.8, 0.2]   # t6 diverges
    outcomes = [simulate(seed, quality) for seed in range(20)]
    assert all(o == outcomes[0] for o in outcomes), outcomes
    # rung epoch 1 keeps the best 3 of 9 (t1, t7, t3), rung epoch 3 the best 1 of those (t1), which runs to 6
    assert outcomes[0] == {"t0": 1, "t1": 6, "t2": 1, "t3": 3, "t4": 1, "t5": 1, "t6": 1, "t7": 3, "t8": 1}
    assert simulate(0, quality, concurrent=4) == outcomes[0]
    # the searcher ran out before the expected 12 trials: rung 0 decides with the 9 it has, nothing hangs
    assert simulate(0, quality, expect=12) == outcomes[0]


def test_sync_halving_keeps_a_rungs_quota_of_all_its_trials_those_ended_before_it_ranking_last():
    """The rule, as Syne Tune's synchronous Hyperband has it: a rung of n trials promotes the best floor(n/eta), at
    least one, a trial that ended before it (failed, diverged) ranking last, so a rung's size is as planned whatever
    fails. The module's doc said "of those still alive" (found by a helper's audit: 6 of 9 failed, 3 promoted)."""
    for failed, promoted in ((0, ["t6", "t7", "t8"]), (3, ["t6", "t7", "t8"]), (6, ["t6", "t7", "t8"]), (8, ["t8"])):
        s = SyncHalving(max_t=9, grace_period=1, reduction_factor=3, trials=9, concurrent=9, mode="max")
        c = FakeController(s)
        trials = [FakeTrial(f"t{i}") for i in range(9)]
        for t in trials:
            c.trials.append(t)
            s.on_trial_add(c, t)
        for t in trials[:failed]:
            t.status = "ERROR"
            s.on_trial_error(c, t)
        for t in trials[failed:]:
            s.on_trial_result(c, t, {"epoch": 1, "objective": int(t.trial_id[1:]) / 10})
        assert sorted(s.promoted[0]) == promoted, (failed, s.promoted[0])


def test_a_trial_at_its_own_last_epoch_takes_no_promotion_from_one_that_can_train_on():
    """With train.epochs searched, a trial whose budget ends at a rung paused there with its final score, and
    ranked high took the rung's promotion: it had nothing left to train, and the long-budget trial that needed the
    slot stopped (found by a helper's audit: no trial reached max epochs). It now ends there, ranked with its rung,
    and the promotions go to trials that can train on."""
    import random

    budget = {"t0": 3, "t1": 6, "t2": 3, "t3": 6, "t4": 6, "t5": 3, "t6": 6, "t7": 6, "t8": 6}
    quality = [0.8, 0.5, 0.79, 0.4, 0.3, 0.2, 0.1, 0.35, 0.45]

    def curve(tid):
        return [{"epoch": e, "objective": quality[int(tid[1:])] * (1 + e / 100)} for e in range(1, 7)]

    for seed in range(5):
        s = SyncHalving(max_t=6, grace_period=1, reduction_factor=3, trials=9, concurrent=3, mode="max",
                        epochs_of=lambda trial: budget[trial.trial_id])
        c = FakeController(s)
        assert sweep_steps(s, c, random.Random(seed), list(range(9)), concurrent=3, curve=curve,
                           epochs=budget.__getitem__)
        trained = {t.trial_id: t.epoch for t in c.trials}
        # rung epoch 1 (9 trials: 3 slots) promotes the best 3 that train past epoch 3 (t1, t8, t3), and t0 and t2,
        # among the best 3 but ending at 3, finish without a slot; at rung epoch 3 they end there, and t1 takes its
        # one promotion (5 trials: 1 slot) and reaches 6
        assert sorted(s.promoted[0]) == ["t0", "t1", "t2", "t3", "t8"] and s.promoted[1] == {"t1"}, s.promoted
        assert trained == {"t0": 3, "t1": 6, "t2": 3, "t3": 3, "t4": 1, "t5": 1, "t6": 1, "t7": 1, "t8": 3}
    # the best 3 all end at epoch 3: a slot given to each left rung epoch 3 no trial to promote, and none reached
    # max epochs (found by a review of the fix above)
    budget = {**{f"t{i}": 3 for i in range(3)}, **{f"t{i}": 6 for i in range(3, 9)}}
    quality = [0.9, 0.85, 0.8, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25]
    s = SyncHalving(max_t=6, grace_period=1, reduction_factor=3, trials=9, concurrent=3, mode="max",
                    epochs_of=lambda trial: budget[trial.trial_id])
    c = FakeController(s)
    assert sweep_steps(s, c, random.Random(0), list(range(9)), concurrent=3, curve=curve, epochs=budget.__getitem__)
    assert {t.trial_id: t.epoch for t in c.trials}["t3"] == 6, s.promoted


def test_a_resumed_sync_sweep_decides_with_its_finished_trials_ended():
    """`tune --resume`: Tune restores the scheduler as pickled at the sweep's start (empty) and adds every trial
    again, the finished ones TERMINATED. They must count as ended, or rung 0 waits for them forever."""
    from ray.tune.schedulers import TrialScheduler

    s = SyncHalving(max_t=6, grace_period=1, reduction_factor=3, trials=6, concurrent=2, mode="max",
                    history=lambda tid: [{"epoch": 1, "objective": {"a": 0.9, "b": 0.8}[tid]}])
    c = FakeController(s)
    for tid, status in (("s1", "TERMINATED"), ("s2", "TERMINATED"), ("s3", "TERMINATED"), ("s4", "TERMINATED"),
                        ("a", "PENDING"), ("b", "PENDING")):   # stopped at rung 0 before the kill; promoted ones
        trial = FakeTrial(tid)
        trial.status = status
        c.trials.append(trial)
        s.on_trial_add(c, trial)
    a, b = c.trials[-2:]
    # resumed from their epoch-2 checkpoints: rung 0 (epoch 1) comes from their records; 2 of 6 go on to rung 1
    a.status = b.status = "RUNNING"
    assert s.on_trial_result(c, a, {"epoch": 2, "objective": 0.95}) == TrialScheduler.PAUSE
    a.status = "PAUSED"
    assert s.on_trial_result(c, b, {"epoch": 2, "objective": 0.85}) == TrialScheduler.CONTINUE
    assert s.promoted[0] == {"a", "b"} and s.choose_trial_to_run(c) is a


def test_a_run_that_trained_past_its_rung_while_pausing_is_judged_at_the_rung():
    """Resumed from a later checkpoint, a trial's first report skips the next rung: its own record gives the rung's
    value, so running ahead (which would add 0.05 here) does not buy a promotion."""
    quality = [0.3, 0.9, 0.5, 0.7, 0.1, 0.6, 0.75, 0.8, 0.2]
    for seed in range(20):
        epochs = simulate(seed, quality, ahead=2)
        assert simulate.promoted == [["t1", "t6", "t7"], ["t1"]], (seed, simulate.promoted)
        assert [t for t, e in epochs.items() if e == 6] == ["t1"]


def test_a_sync_sweep_killed_after_two_rungs_decided_resumes_to_the_same_decisions(tmp_path, monkeypatch):
    """Rungs at epochs 1, 2 and 4 over 16 trials: they keep 8, 4, then 2. Killed after the second rung decided, then
    resumed as Tune resumes: the scheduler comes back as pickled at the start (empty), every trial is added again
    (finished ones TERMINATED, unfinished ones PENDING, from their last checkpoint). The decisions made before the
    kill stand, and the sweep ends as the uninterrupted one does. Before: each rung was judged again among the live
    trials only, so the second kept 2 of its 4 and the third 1."""
    import random

    quality = [0.30, 0.90, 0.50, 0.70, 0.10, 0.60, 0.80, 0.20, 0.35, 0.85, 0.55, 0.75, 0.15, 0.65, 0.45, 0.25]

    def curve(tid):
        q = quality[int(tid[1:])]
        return [{"epoch": e, "objective": q * e / 6} for e in range(1, 7)]

    def scheduler(state):
        return SyncHalving(max_t=6, grace_period=1, reduction_factor=2, trials=16, concurrent=2, mode="max",
                           history=curve, state=str(state))

    from orchestrator import storage

    writes = []
    write = storage.atomic_write
    monkeypatch.setattr(storage, "atomic_write", lambda path, data: (writes.append(path), write(path, data)))
    whole = scheduler(tmp_path / "whole.json")
    c = FakeController(whole)
    assert sweep_steps(whole, c, random.Random(0), list(range(16)), concurrent=2, curve=curve)
    # one write per score recorded at a rung (16 + 8 + 4): a decision is written with the score that settled it
    assert len(writes) == 28 == sum(len(v) for v in whole.values), len(writes)
    monkeypatch.undo()
    expected = {t.trial_id: t.epoch for t in c.trials}
    decided = [sorted(p) for p in whole.promoted]
    assert decided == [["t1", "t10", "t11", "t13", "t3", "t5", "t6", "t9"], ["t1", "t11", "t6", "t9"], ["t1", "t9"]]
    assert expected == {**{f"t{i}": 1 for i in range(16)}, "t3": 2, "t5": 2, "t10": 2, "t13": 2, "t6": 4, "t11": 4,
                        "t1": 6, "t9": 6}

    first = scheduler(tmp_path / "killed.json")
    c = FakeController(first)
    assert not sweep_steps(first, c, random.Random(0), list(range(16)), concurrent=2, curve=curve,
                           stop=lambda: first.promoted[1] is not None)
    resumed = scheduler(tmp_path / "killed.json")
    c2 = FakeController(resumed)
    for t in sorted(c.trials, key=lambda t: t.trial_id):
        again = FakeTrial(t.trial_id)
        again.epoch, again.status = t.epoch, "TERMINATED" if t.status == "TERMINATED" else "PENDING"
        c2.trials.append(again)
        resumed.on_trial_add(c2, again)
    # Tune starts the restored trials as resources allow (the simulation starts them all at once)
    assert sweep_steps(resumed, c2, random.Random(1), [], concurrent=16, curve=curve)
    assert [sorted(p) for p in resumed.promoted] == decided
    assert {t.trial_id: t.epoch for t in c2.trials} == expected


def test_a_resumed_asha_sweep_judges_newcomers_against_the_rungs_recorded_before_the_kill(tmp_path):
    """The default scheduler, ASHA, as the sweep makes it. Tune restores it empty on --resume (as pickled at the
    sweep's start: Ray never calls a scheduler's save), so a trial starting after the resume met empty rungs and
    continued whatever its score. The rungs recorded before the kill must judge it."""
    import pickle

    from ray.tune.schedulers import TrialScheduler

    from orchestrator.config import parse_config
    from orchestrator.sweep.tuner import make_scheduler

    from factories import experiment

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 4},
                                  search={"space": {"train.head_lr": {"choice": [1e-3, 3e-3]}}, "num_samples": 8,
                                          "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2}}))

    def fresh():   # what Tune holds at the sweep's start, and again after --resume
        sch = make_scheduler(cfg, trials=8, concurrent=2, sweep_id="s1")
        sch.set_search_properties("objective", "max")
        return sch

    at_start = pickle.dumps(fresh())
    first = pickle.loads(at_start)
    c, decisions = FakeController(first), []
    for i, score in enumerate([0.9, 0.8, 0.7, 0.6]):        # 4 trials reach epoch 1 before the kill
        trial = FakeTrial(f"t{i}")
        first.on_trial_add(c, trial)
        decisions.append(first.on_trial_result(c, trial, {"epoch": 1, "objective": score}))
    # ASHA: each below the median of the rung's earlier scores stops
    assert decisions == [TrialScheduler.CONTINUE] + [TrialScheduler.STOP] * 3
    resumed = pickle.loads(at_start)
    newcomer = FakeTrial("t4")
    resumed.on_trial_add(FakeController(resumed), newcomer)
    # below the median of the rung's 4 scores recorded before the kill (0.75): stopped, as without the kill
    assert resumed.on_trial_result(FakeController(resumed), newcomer, {"epoch": 1, "objective": 0.5}) == \
        TrialScheduler.STOP
    good = FakeTrial("t5")
    resumed.on_trial_add(FakeController(resumed), good)
    assert resumed.on_trial_result(FakeController(resumed), good, {"epoch": 1, "objective": 0.95}) == \
        TrialScheduler.CONTINUE


def test_a_sweep_that_kept_its_rungs_in_its_own_folder_resumes_with_them(tmp_path):
    """Sweeps started before the rungs moved to ``<sweep>/orchestrator/`` (layout.sweep_own) kept them in the sweep's
    folder itself. Resumed by this code, such a sweep found none at the new place and judged its newcomers against
    empty rungs (every one went on): the rungs found at the old place must judge them, and what changes after goes to
    the new place, the old file left as it was."""
    import shutil

    from ray.tune.schedulers import TrialScheduler

    from orchestrator import layout
    from orchestrator.config import parse_config
    from orchestrator.sweep.tuner import make_scheduler

    from factories import experiment

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 4},
                                  search={"space": {"train.head_lr": {"choice": [1e-3, 3e-3]}}, "num_samples": 8,
                                          "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2}}))

    def fresh():
        sch = make_scheduler(cfg, trials=8, concurrent=2, sweep_id="s1")
        sch.set_search_properties("objective", "max")
        return sch

    before = fresh()
    for i, score in enumerate([0.9, 0.8, 0.7, 0.6]):        # recorded before the kill
        trial = FakeTrial(f"t{i}")
        before.on_trial_add(FakeController(before), trial)
        before.on_trial_result(FakeController(before), trial, {"epoch": 1, "objective": score})
    kept = layout.scheduler_state(cfg.storage, cfg.name, "s1", "asha")
    old = os.path.join(layout.sweep_dir(cfg.storage, cfg.name, "s1"), "asha.json")
    shutil.move(kept, old)                                   # where the older code kept them
    old_text = open(old).read()
    resumed = fresh()
    newcomer = FakeTrial("t4")
    resumed.on_trial_add(FakeController(resumed), newcomer)
    assert resumed.on_trial_result(FakeController(resumed), newcomer, {"epoch": 1, "objective": 0.5}) == \
        TrialScheduler.STOP                                  # below the median of the 4 recorded before (0.75)
    recorded = {tid for bracket in json.loads(open(kept).read())["rungs"] for rung in bracket for tid in rung}
    assert recorded == {"t0", "t1", "t2", "t3", "t4"} and open(old).read() == old_text
    # once the new place holds records, they are read, not the old file (which a resumed Tune keeps uploading)
    again = fresh()
    again._load()
    assert "t4" in again._records() and "t4" not in old_text
    uri = layout.scheduler_state("s3://b/runs?endpoint_override=h:1", "e", "s1", "asha")   # and on object stores
    assert layout.scheduler_state_kept_before(uri) == "s3://b/runs/sweeps/e/s1/asha.json?endpoint_override=h:1"


def test_rungs():
    assert rungs_for(6, 1, 3) == [1, 3]
    assert rungs_for(4, 1, 2) == [1, 2]
    assert rungs_for(9, 1, 3) == [1, 3]
    assert rungs_for(1, 1, 2) == []


@pytest.mark.slow
def test_sync_halving_promotes_the_same_trials_whatever_the_report_order(ray_session, tmp_path):
    fast_first = run_sync(tmp_path / "a", [0.0, 0.6, 0.3, 0.45, 0.05, 0.15])
    slow_first = run_sync(tmp_path / "b", [0.6, 0.0, 0.45, 0.05, 0.3, 0.15])
    for results, states in (fast_first, slow_first):
        epochs = {i: s["epoch"] for i, s in states.items()}
        # rung 1 (epoch 1) keeps the best 2 of 6 (trials 1, 3); rung 2 (epoch 3) keeps the best of those (1)
        assert epochs[1] == 6 and epochs[3] >= 3 and epochs[3] < 6, epochs
        assert all(epochs[i] < 3 for i in (0, 2, 4, 5)), epochs
        # a promoted trial resumed from its own record, not from scratch: it was paused at each rung
        assert states[1]["starts"][0] == 0 and states[1]["starts"][1:] and min(states[1]["starts"][1:]) >= 1, states
        assert len(results) == 6 and not results.errors


def limiter():
    from ray.tune.search import Searcher

    from orchestrator.sweep.searchers import Limiter

    class Told(Searcher):
        def __init__(self):
            super().__init__(metric="objective", mode="max")
            self.told = {}

        def suggest(self, trial_id):
            return {"x": 1}

        def on_trial_complete(self, trial_id, result=None, error=False):
            self.told[trial_id] = (result or {}).get("objective"), error

    inner = Told()
    return Limiter(inner, 5, mode="max"), inner


def test_failed_diverged_and_paused_trials_reach_the_searcher_as_values():
    lim, inner = limiter()
    for t in ("good", "bad", "failed", "nan", "paused"):
        assert lim.suggest(t) == {"x": 1}
    lim.on_trial_result("good", {"objective": 0.8, "epoch": 1})
    lim.on_trial_result("bad", {"objective": 0.2, "epoch": 1})
    lim.on_trial_result("paused", {"objective": 0.5, "epoch": 1})
    lim.on_trial_complete("good", {"objective": 0.8})
    lim.on_trial_complete("bad", {"objective": 0.2})
    lim.on_trial_complete("failed", None, error=True)
    lim.on_trial_complete("nan", {"objective": float("nan"), "status": "diverged"})
    lim.on_trial_complete("paused")                        # stopped while paused: no final result
    assert inner.told == {"good": (0.8, False), "bad": (0.2, False), "failed": (0.2, False), "nan": (0.2, False),
                          "paused": (0.5, False)}


def test_a_completed_row_with_the_same_config_and_seed_is_reused(tmp_path):
    from factories import experiment, row
    from orchestrator.config import parse_config
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep.runner import completed_row

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 2}, search={
        "space": {"train.loss_weighting": {"choice": ["uncertainty", {"dwa": {
            "train.dwa_temperature": {"uniform": [1.0, 4.0]}}}]}}}))
    done = cfg.with_values({"train.loss_weighting": "uncertainty"})
    history = [{"epoch": e, "objective": 0.5 + e / 10, "status": "running"} for e in (1, 2)]
    Leaderboard(cfg.storage).append([row(done, history, trial_id="old", sweep_id="s0", fingerprint="fp"),
                                     row(done.with_values({"train.seed": 7}), history[:1], trial_id="cut",
                                         fingerprint="fp")])
    # differs only where unused
    again = completed_row(done.with_values({"train.dwa_temperature": 3.0}), fingerprint="fp", n_blocks=5)
    assert again["trial_id"] == "old" and [h["epoch"] for h in again["history"]] == [1, 2]
    assert completed_row(done.with_values({"train.seed": 1}), fingerprint="fp", n_blocks=5) is None   # another seed
    assert completed_row(done.with_values({"train.seed": 7}), fingerprint="fp",
                         n_blocks=5) is None   # stopped rows: not done work


def test_a_completed_row_on_other_data_is_not_reused(tmp_path):
    # The config hash names the data's path, not its content: a file rewritten in place is other data.
    from factories import experiment, row
    from orchestrator.config import parse_config
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep.runner import completed_row

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 2}))
    history = [{"epoch": e, "objective": 0.5 + e / 10, "status": "running"} for e in (1, 2)]
    Leaderboard(cfg.storage).append([row(cfg, history, trial_id="old", fingerprint="data-v1")])
    assert completed_row(cfg, fingerprint="data-v1", n_blocks=5)["trial_id"] == "old"
    assert completed_row(cfg, fingerprint="data-v2", n_blocks=5) is None


def test_warm_start_auto_says_it_is_ignored_where_the_searcher_cannot_take_it(tmp_path):
    from factories import experiment, row
    from orchestrator.config import parse_config
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep.searchers import evaluated_rows

    metrics = ["left_accuracy", "right_accuracy"]
    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 2}, search={
        "searcher": "optuna", "warm_start": "auto", "scheduler": {"type": "moasha", "metrics": metrics},
        "space": {"train.freeze_depth": {"choice": [0, 1, 2]}}}))
    history = [{"epoch": e, "objective": 0.5 + e / 10, "left_accuracy": 0.7, "right_accuracy": 0.6,
                "status": "running"} for e in (1, 2)]
    Leaderboard(cfg.storage).append([row(cfg.with_values({"train.freeze_depth": 1}), history, fingerprint="fp")])
    said = []
    assert evaluated_rows(cfg, "fp", say=said.append) == ()
    assert len(said) == 1 and "ignored" in said[0] and "moasha" in said[0]


def test_warm_start_auto_hands_optuna_earlier_completed_rows(tmp_path):
    import optuna

    from factories import experiment, row
    from orchestrator.config import parse_config
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep.searchers import evaluated_rows, make_searcher

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 2}, search={
        "searcher": "optuna", "warm_start": "auto", "space": {
            "train.freeze_depth": {"choice": [0, 1, 2]},
            "train.loss_weighting": {"choice": ["uncertainty", {"dwa": {
                "train.dwa_temperature": {"uniform": [1.0, 4.0]}}}]}}}))
    history = [{"epoch": e, "objective": 0.5 + e / 10, "status": "running"} for e in (1, 2)]
    dwa = cfg.with_values({"train.loss_weighting": "dwa", "train.dwa_temperature": 3.0, "train.freeze_depth": 1})
    rows = [row(dwa, history, fingerprint="fp", trial_id="used"),
            row(cfg.with_values({"train.loss_weighting": "uncertainty"}), history, fingerprint="fp", trial_id="u"),
            row(dwa, history, fingerprint="other-data", trial_id="other"),
            row(dwa, history[:1], fingerprint="fp", trial_id="stopped"),
            row(cfg.with_values({"train.epochs": 3}), history + [{"epoch": 3, "objective": 0.9}], fingerprint="fp",
                trial_id="longer"),
            row(cfg.with_values({"train.freeze_depth": 4}), history, fingerprint="fp", trial_id="outside"),
            # another recipe outside the space (a head rate the config no longer has): not today's trials
            row(cfg.with_values({"train.loss_weighting": "uncertainty", "train.freeze_depth": 2,
                                 "train.head_lr": 0.05}), history, fingerprint="fp", trial_id="other_recipe"),
            {**row(cfg.with_values({"train.loss_weighting": "uncertainty", "train.freeze_depth": 2}), history,
                   fingerprint="fp", trial_id="older_code"), "training_revision": None},
            # where it ran is not what it learned
            row(cfg.with_values({"train.loss_weighting": "uncertainty", "train.freeze_depth": 1,
                                 "resources.workers": 2}), history, fingerprint="fp", trial_id="two_workers"),
            # another seed (a grid repeat), checkpoints and cache folder: the same recipe
            row(cfg.with_values({"train.loss_weighting": "uncertainty", "train.freeze_depth": 2, "train.seed": 1,
                                 "train.checkpoint_every": 2, "data.cache_dir": "/elsewhere"}), history,
                fingerprint="fp", trial_id="seed_1")]
    Leaderboard(cfg.storage).append(rows)
    said = []
    evaluated = evaluated_rows(cfg, "fp", say=said.append)
    assert sorted(evaluated, key=str) == sorted([
        ({"train.freeze_depth": 1, "train.loss_weighting": "dwa", "train.dwa_temperature": 3.0}, 0.7),
        ({"train.freeze_depth": 0, "train.loss_weighting": "uncertainty"}, 0.7),
        ({"train.freeze_depth": 1, "train.loss_weighting": "uncertainty"}, 0.7),
        ({"train.freeze_depth": 2, "train.loss_weighting": "uncertainty"}, 0.7)], key=str)
    assert "4 earlier trial(s)" in said[0]
    searcher = make_searcher(cfg, 2, [], evaluated=evaluated)
    study = optuna.load_study(study_name="optuna", storage=searcher.searcher._storage)
    assert [t.value for t in study.trials] == [0.7, 0.7, 0.7, 0.7]
    assert searcher.suggest("next") is not None


def test_a_sweep_has_a_time_budget(tmp_path):
    from orchestrator.sweep.runner import SweepSpec, TrialPlan, make_tuner

    from factories import experiment
    from orchestrator.config import parse_config

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", search={
        "time_budget_s": 30, "space": {"train.freeze_depth": {"choice": [0, 1]}}}))
    tuner = make_tuner(cfg, SweepSpec(TrialPlan("s", {}, None), {}, time_budget_s=cfg.search.time_budget_s))
    assert tuner._local_tuner._tune_config.time_budget_s == 30


def test_a_sweep_cut_by_its_time_budget_still_writes_rows_of_trials_that_trained(tmp_path):
    import time
    from types import SimpleNamespace

    from factories import experiment
    from orchestrator.config import parse_config
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.leaderboard.rows import RowContext
    from orchestrator.sweep.callback import SweepCallback

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 3}, search={
        "time_budget_s": 5, "space": {"train.freeze_depth": {"choice": [0, 1]}}}))
    callback = SweepCallback(cfg, context=RowContext("s", 5), out=lambda line: None)
    callback.setup()
    # Ray marks the trials a budget cuts TERMINATED before on_experiment_end (Tune's _stop_experiment_if_needed),
    # without an on_trial_complete: a stand-in still RUNNING hid that no row was written (found by a helper's audit)
    cut = SimpleNamespace(trial_id="cut", status="TERMINATED", config={"train.freeze_depth": 1})
    idle = SimpleNamespace(trial_id="idle", status="TERMINATED", config={"train.freeze_depth": 0})
    callback.history["cut"] = [{"epoch": 1, "objective": 0.4}]
    callback.on_experiment_end(trials=[cut, idle])        # within the budget (an interrupt): nothing written
    assert Leaderboard(cfg.storage).table(experiment="t").num_rows == 0
    callback.began = time.monotonic() - 6
    callback.on_experiment_end(trials=[cut, idle])
    (row,) = Leaderboard(cfg.storage).table(experiment="t").to_pylist()
    assert row["trial_id"] == "cut" and row["status"] == "stopped" and row["epochs"] == 1 and row["freeze_depth"] == 1
    # not the scheduler's stop (its row said "stopped early by the scheduler", under scheduler none too)
    assert row["reason"] == "cut by search.time_budget_s (5 s) after epoch 1", row["reason"]


def test_searcher_state_leaves_out_the_schedulers_gate():
    from orchestrator.sweep.searchers import GatedVariants

    scheduler = SyncHalving(max_t=6, grace_period=1, reduction_factor=3, trials=6, concurrent=2, mode="max")
    lim, _ = limiter()
    lim.gate = scheduler.has_room
    assert "gate" not in lim.get_state() and "searcher" not in lim.get_state()
    variants = GatedVariants(scheduler.has_room, random_state=0, max_concurrent=0, points_to_evaluate=None)
    assert "gate" not in variants.get_state()


def test_a_completed_row_of_an_older_training_revision_is_not_reused(tmp_path, monkeypatch):
    """Done work is found by config hash. When what a config trains or measures changes (round 3: FAMO's Adam step,
    AUC from logit bins, float64 R² sums), rows of the older code must be trained again, not reused (nor resumed
    from their checkpoints): ``TRAINING_REVISION`` is part of the hash and is bumped with such a change."""
    from factories import experiment, row
    from orchestrator.config import parse_config, schema
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep.runner import completed_row

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 2, "loss_weighting": "famo"}))
    history = [{"epoch": e, "objective": 0.5 + e / 10, "status": "running"} for e in (1, 2)]
    Leaderboard(cfg.storage).append([row(cfg, history, trial_id="old", fingerprint="fp")])
    assert completed_row(cfg, fingerprint="fp", n_blocks=5)["trial_id"] == "old"
    monkeypatch.setattr(schema, "TRAINING_REVISION", schema.TRAINING_REVISION + 1)   # the code changed
    assert completed_row(cfg, fingerprint="fp", n_blocks=5) is None


def test_tunes_restore_neither_copies_nor_uploads_what_a_sweep_keeps(tmp_path, monkeypatch):
    """A resumed Tune copies every .json and .pkl at the top of its experiment folder (the sweep's folder) to a
    staging folder and uploads its copies back at each experiment-state save: rungs and a lease kept there went back
    to their state at the resume. Ray's own restore and save, on a sweep folder laid out by ``layout``: what the sweep
    rewrites while it runs (its scheduler's rungs, its lease) is neither copied nor overwritten. (The staging folder is
    put under tmp_path: Ray's puts it in its session folder, which needs a running Ray.)"""
    from ray.train._internal.storage import StorageContext
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    from orchestrator import layout
    from orchestrator.training import lease

    runs = str(tmp_path / "runs")
    kept = [layout.scheduler_state(runs, "exp", "s1", s) for s in ("asha", "sync", "moasha")]
    for path in kept:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").write('"at the resume"')
    held = lease.acquire(layout.sweep_own(runs, "exp", "s1"), what="sweep s1")
    try:
        kept.append(layout.lease_file(layout.sweep_own(runs, "exp", "s1")))
        open(layout.sweep_record(runs, "exp", "s1"), "w").write("{}")
        monkeypatch.setattr(StorageContext, "_get_session_path", lambda self: str(tmp_path / "staging"))
        context = StorageContext(layout.sweeps(runs, "exp"), "s1")
        manager = _ExperimentCheckpointManager(storage=context, checkpoint_period=2)
        manager.sync_down_experiment_state()                        # what Tuner.restore does
        staged = sorted(os.path.relpath(os.path.join(d, f), context.experiment_driver_staging_path)
                        for d, _, files in os.walk(context.experiment_driver_staging_path) for f in files)
        assert staged == ["sweep.json"], staged   # the top level's only file of ours, written once at the start
        before = {path: open(path).read() for path in kept}
        for path in kept[:3]:
            open(path, "w").write('"after the resume"')
        manager.sync_up_experiment_state(lambda: None, force=True, wait=True)   # an experiment-state save
        assert [open(path).read() for path in kept[:3]] == ['"after the resume"'] * 3
        assert open(kept[3]).read() == before[kept[3]] and lease.read(layout.sweep_own(runs, "exp", "s1"))
    finally:
        held.release()   # its renewal thread ends whatever the assertions say


def test_a_diverged_trial_whose_scores_stay_finite_ranks_last_under_asha(tmp_path):
    """Under mixed_float16 a trial's losses can turn non-finite (status diverged) while its validation outputs, and so
    its objective, stay finite. Sync halving and MO-ASHA rank it last; ASHA recorded its 0.95 in the rung, where it
    stopped a healthy trial at 0.90. It is recorded as the worst score, and stopped."""
    from factories import experiment
    from orchestrator.config import parse_config
    from orchestrator.sweep.tuner import make_scheduler

    for kind in ("asha", "sync"):
        cfg = parse_config(experiment(tmp_path / kind, "builtin:multidigits/train", train={"epochs": 4}, search={
            "space": {"train.head_lr": {"choice": [1e-3, 3e-3]}}, "num_samples": 2,
            "scheduler": {"type": kind, "grace_period": 1, "reduction_factor": 2}}))
        scheduler = make_scheduler(cfg, trials=2, concurrent=2, sweep_id=None)
        scheduler.set_search_properties("objective", "max")
        controller = FakeController(scheduler)
        dead, good = FakeTrial("dead"), FakeTrial("good")
        for trial in (dead, good):
            scheduler.on_trial_add(controller, trial)
            controller.trials.append(trial)
        said = scheduler.on_trial_result(controller, dead, {"epoch": 1, "objective": 0.95, "status": "diverged"})
        assert said in ("STOP", "PAUSE"), (kind, said)
        assert scheduler.on_trial_result(controller, good, {"epoch": 1, "objective": 0.90, "status": "running"}) == \
            "CONTINUE" and good.status != "TERMINATED", kind


def test_under_moasha_failed_and_diverged_trials_reach_optuna_as_the_worst_values(tmp_path):
    """Optuna searches MO-ASHA's metrics multi-objectively, but without the Limiter the single-objective path has: a
    diverged trial with finite scores was told as a good COMPLETE trial, a failed one as FAIL (learned nothing)."""
    from factories import experiment
    from orchestrator.config import parse_config
    from orchestrator.sweep.searchers import make_searcher

    metrics = ["left_accuracy", "sum_mae"]
    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 2}, search={
        "searcher": "optuna", "scheduler": {"type": "moasha", "metrics": metrics},
        "space": {"train.head_lr": {"loguniform": [1e-4, 1e-2]}}}))
    searcher = make_searcher(cfg, 3, [])
    for t in ("ok", "dead", "failed"):
        searcher.suggest(t)
    searcher.on_trial_result("ok", {"left_accuracy": 0.8, "sum_mae": 0.4, "epoch": 1})
    searcher.on_trial_complete("ok", {"left_accuracy": 0.9, "sum_mae": 0.3, "epoch": 2})
    searcher.on_trial_complete("dead", {"left_accuracy": 0.97, "sum_mae": 0.1, "status": "diverged", "epoch": 1})
    searcher.on_trial_complete("failed", None, error=True)
    told = {t.number: (t.state.name, t.values) for t in searcher.searcher._ot_study.trials}
    assert told == {0: ("COMPLETE", [0.9, 0.3]), 1: ("COMPLETE", [0.8, 0.4]), 2: ("COMPLETE", [0.8, 0.4])}, told


def test_work_reused_under_objective_delta_m_is_measured_against_this_sweeps_baselines(tmp_path):
    """A later sweep whose base config differs only in a searched value gets new single-task baselines, but its trial
    of an earlier sweep's config and seed is the same work: reused, it handed Tune (and warm_start auto, Optuna) the
    Δm% measured against the earlier sweep's baselines. Its row then said +7.5 as its objective and -6.48 as its
    Δm%. A reused row's epochs are measured again against this sweep's baselines."""
    from factories import experiment, row
    from orchestrator.config import parse_config
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.metrics import delta_m_pct
    from orchestrator.sweep.runner import completed_row, reused_epochs
    from orchestrator.sweep.searchers import evaluated_rows

    space = {"train.head_lr": {"choice": [0.001, 0.005]}}
    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 2, "head_lr": 0.005},
                                  objective={"metric": "delta_m"},
                                  search={"space": space, "searcher": "optuna", "warm_start": "auto"}))
    old, new = {"left": 0.80, "right": 0.80, "sum": 0.50}, {"left": 0.90, "right": 0.90, "sum": 0.60}
    scores = {"left": ("accuracy", 0.85), "right": ("accuracy", 0.85), "sum": ("r2", 0.55)}
    then, now = delta_m_pct(scores, old), delta_m_pct(scores, new)
    history = [{"epoch": e, "objective": then, "delta_m": then, "left_accuracy": .85, "right_accuracy": .85,
                "sum_r2": .55, "mean_score": .75, "status": "running"} for e in (1, 2)]
    Leaderboard(cfg.storage).append([row(cfg, history, trial_id="old", sweep_id="s1", fingerprint="fp", baselines=old)])
    done = completed_row(cfg, fingerprint="fp", n_blocks=5)
    epochs = reused_epochs(cfg, done, baselines=new)
    assert [e["objective"] for e in epochs] == pytest.approx([now, now]) and now < 0 < then
    assert [e["delta_m"] for e in epochs] == pytest.approx([now, now])
    ((_, told),) = evaluated_rows(cfg, "fp", baselines=new, say=lambda line: None)
    assert told == pytest.approx(now)


def test_a_trial_resumed_past_its_last_rung_is_recorded_there(tmp_path):
    """A sweep killed between a trial's epoch-4 checkpoint and the driver's receipt of that epoch's result: resumed,
    the trial's first result is its last epoch (5), and ASHA records nothing at the last epoch, so the rung at 4 never
    held it (tests/test_faults.py's killed-sweep test failed so, now and then) and later trials were judged without
    it. It is recorded at the rung it passed, at the score it reports, as ASHA records any late arrival."""
    import json

    from factories import experiment
    from orchestrator import layout
    from orchestrator.config import parse_config
    from orchestrator.sweep.tuner import make_scheduler

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 5},
                                  search={"space": {"train.head_lr": {"choice": [1e-3, 3e-3]}}, "num_samples": 2,
                                          "scheduler": {"type": "asha", "grace_period": 4, "reduction_factor": 2}}))
    scheduler = make_scheduler(cfg, trials=2, concurrent=2, sweep_id="s1")
    scheduler.set_search_properties("objective", "max")
    controller, early, resumed = FakeController(scheduler), FakeTrial("early"), FakeTrial("resumed")
    for trial in (early, resumed):
        scheduler.on_trial_add(controller, trial)
    assert scheduler.on_trial_result(controller, early, {"epoch": 4, "objective": 0.7}) == "CONTINUE"
    assert scheduler.on_trial_result(controller, resumed, {"epoch": 5, "objective": 0.9}) == "STOP"   # its last
    assert scheduler.on_trial_result(controller, early, {"epoch": 5, "objective": 0.8}) == "STOP"
    (rung,) = json.loads(open(layout.scheduler_state(cfg.storage, cfg.name, "s1", "asha")).read())["rungs"][0]
    assert rung == {"early": 0.7, "resumed": 0.9}, rung


def test_a_limiter_pickled_by_older_code_resumes(tmp_path):
    """Tune pickles the searcher at a sweep's start and unpickles it on --resume. Older code's Limiter held one
    objective's sign and worst value; this code's holds them per metric: a sweep started before the change must go
    on after it, with the worst value it had seen."""
    import copy

    lim, inner = limiter()
    old = dict(lim.__dict__)
    for name in ("signs", "worst_of"):
        del old[name]
    old.update(sign=1.0, worst=0.2)
    lim.__dict__.clear()
    lim.__dict__.update(old)
    resumed = copy.copy(lim)   # what unpickling does: a new object given the old state (its class is local here)
    resumed.suggest("failed")
    resumed.on_trial_complete("failed", None, error=True)
    assert resumed.searcher.told == {"failed": (0.2, False)}


def test_a_trial_whose_objective_is_nan_ranks_last_under_asha():
    """An objective can be NaN without the trial diverging (an AUC over a one-class validation set, a Δm% over a zero
    baseline). Ray's rung compares NaN < cutoff, which is False: ASHA continued such a trial at every rung, where sync
    halving and MO-ASHA rank it last and Optuna is told the worst value. Found by a helper's audit."""
    import math

    from orchestrator.sweep.kept import KeptASHA

    scores = {"t0": 0.9, "t1": 0.8, "t2": 0.7, "t3": 0.6}
    for last, expected in ((0.1, "STOP"), (math.nan, "STOP")):
        scheduler = KeptASHA(max_t=8, grace_period=1, reduction_factor=2)
        scheduler.set_search_properties("objective", "max")
        trials = [FakeTrial(t) for t in [*scores, "t4"]]
        for trial in trials:
            scheduler.on_trial_add(None, trial)
        for trial, value in zip(trials, [*scores.values(), last]):
            said = scheduler.on_trial_result(None, trial, {"epoch": 1, "objective": value, "status": "running"})
        assert said == expected, (last, said)


def test_a_result_without_an_objective_ranks_last_under_asha_and_ends_nothing_else():
    """A reused row's epoch keeps a NaN objective as null (rows.compact_epoch), and the sweep re-reports it: ASHA's
    float(None) raised in Tune's controller and the whole sweep died (TuneError). Ranked last, as NaN; a trial
    completing with it is recorded so too. Found by a helper's audit."""
    from orchestrator.sweep.kept import KeptASHA

    scheduler = KeptASHA(max_t=8, grace_period=1, reduction_factor=2)
    scheduler.set_search_properties("objective", "max")
    trials = [FakeTrial(t) for t in ("t0", "t1", "t2", "t3", "t4")]
    for trial in trials:
        scheduler.on_trial_add(None, trial)
    for trial, value in zip(trials[:4], (0.9, 0.8, 0.7, 0.6)):
        scheduler.on_trial_result(None, trial, {"epoch": 1, "objective": value, "status": "running"})
    assert scheduler.on_trial_result(None, trials[4], {"epoch": 1, "objective": None, "status": "running"}) == "STOP"
    scheduler.on_trial_complete(None, trials[3], {"epoch": 2, "objective": None, "status": "running"})


def test_a_trial_asha_stopped_stays_stopped_after_a_resume(tmp_path):
    """The driver killed after ASHA stopped a trial but before Tune saved it as terminated: resumed, the trial runs
    again from its checkpoint and its next epoch met an empty rung, so it went on (ASHA kept its rungs' scores across
    --resume, not its decisions; MO-ASHA kept both). Found by a helper's audit."""
    import pickle

    from ray.tune.schedulers import TrialScheduler

    from orchestrator.config import parse_config
    from orchestrator.sweep.tuner import make_scheduler

    from factories import experiment

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 8},
                                  search={"space": {"train.head_lr": {"choice": [1e-3, 3e-3]}}, "num_samples": 2,
                                          "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2}}))
    sch = make_scheduler(cfg, trials=2, concurrent=2, sweep_id="s1")
    sch.set_search_properties("objective", "max")
    at_start = pickle.dumps(sch)
    first = pickle.loads(at_start)
    a, b = FakeTrial("a"), FakeTrial("b")
    for trial in (a, b):
        first.on_trial_add(None, trial)
    assert first.on_trial_result(None, a, {"epoch": 1, "objective": 0.9}) == TrialScheduler.CONTINUE
    assert first.on_trial_result(None, b, {"epoch": 1, "objective": 0.5}) == TrialScheduler.STOP
    resumed = pickle.loads(at_start)
    resumed.on_trial_add(None, FakeTrial("b"))
    assert resumed.on_trial_result(None, b, {"epoch": 2, "objective": 0.55}) == TrialScheduler.STOP
    resumed.on_trial_complete(None, b, {"epoch": 2, "objective": 0.55})   # Tune's stop: not recorded at rung 2
    assert [sorted(rung) for rung in json.loads(resumed._records())["rungs"][0]] == [[], [], [], ["a", "b"]]
    older = pickle.loads(at_start)   # the rungs as older code kept them (no decisions): still read
    older._restore(json.dumps(json.loads(first._records())["rungs"]))
    assert older._count() == 2 and not older.stopped


def test_moasha_records_a_trial_whose_first_result_after_a_resume_is_its_last_epoch(tmp_path):
    """KeptASHA records a trial resumed past its last rung at that rung; MO-ASHA stopped it at max_t unrecorded, so
    later arrivals at the rung were judged without it. Found by a helper's audit."""
    from orchestrator.sweep.moasha import MOASHA

    sch = MOASHA(["left_accuracy"], max_t=4, grace_period=1, reduction_factor=2)
    for trial, value in (("c", 0.9), ("b", 0.5), ("a", 0.7)):
        sch.decide(trial, {"epoch": 1, "left_accuracy": value})
    sch.decide("a", {"epoch": 2, "left_accuracy": 0.7})
    assert sch.decide("c", {"epoch": 4, "left_accuracy": 0.95}) == "STOP"     # its last epoch: done
    assert set(sch.rungs.recorded[2]) == {"a", "c"}


def test_a_reused_trials_row_holds_the_work_it_reuses_whatever_the_scheduler_did_with_its_replay(tmp_path):
    """A reused trial hands Tune the completed row's epochs again, and a scheduler judges them like a live trial's:
    stopped after the first, its row said "stopped early by the scheduler after epoch 1" with the epoch-1 score,
    and its line "not rerun, its row is reused (objective 0.3000)". The work it names completed at 0.8. Found by a
    helper's audit."""
    from types import SimpleNamespace

    from orchestrator.config import parse_config
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.leaderboard.rows import RowContext
    from orchestrator.sweep.callback import SweepCallback

    from factories import experiment

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 2}, search={
        "space": {"train.freeze_depth": {"choice": [0, 1]}}}))
    lines = []
    callback = SweepCallback(cfg, context=RowContext("s2", 5), out=lines.append)
    trial = SimpleNamespace(trial_id="r", status="TERMINATED", config={"train.freeze_depth": 1})
    work = [{"epoch": 1, "objective": 0.3, "status": "running"}, {"epoch": 2, "objective": 0.8, "status": "running"}]
    callback.on_trial_result(0, [trial], trial, {**work[0], "reused_row": "R0", "reused_from": "s1/old",
                                                 "reused_checkpoint": None, "reused_history": work})
    # the scheduler stopped the replay after epoch 1
    callback.on_trial_complete(0, [trial], trial)
    (row,) = Leaderboard(cfg.storage).table(experiment="t").to_pylist()
    assert (row["status"], row["epochs"], row["objective"], row["duplicate_of"]) == ("completed", 2, 0.8, "R0")
    assert any("its row is reused (objective 0.8000)" in line for line in lines), lines


def test_a_stopped_trials_twin_in_a_later_sweep_counts_once_and_a_reused_row_keeps_its_works_time(tmp_path):
    """Only completed work was looked for: a second sweep of the same grid trained its stopped trials again (the same
    config, seed and epochs: byte-identical results) and their rows named no twin, so the experiment's leaderboard
    ranked each of those works twice. And a reused trial's row gave the replay's time (waiting paused at a rung) as
    its wall time, though nothing trained. Found by a helper's audit."""
    from types import SimpleNamespace

    from orchestrator.config import parse_config
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.leaderboard.rows import RowContext
    from orchestrator.sweep.callback import SweepCallback

    from factories import experiment

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 2}, search={
        "space": {"train.freeze_depth": {"choice": [0, 1]}}}))
    for sweep in ("s1", "s2"):
        callback = SweepCallback(cfg, context=RowContext(sweep, 5, fingerprint="fp"), out=lambda line: None)
        trial = SimpleNamespace(trial_id=f"{sweep}-a", status="TERMINATED", config={"train.freeze_depth": 1})
        callback.on_trial_result(0, [trial], trial, {"epoch": 1, "objective": 0.3, "status": "running"})
        callback.on_trial_complete(0, [trial], trial)   # the scheduler stopped it after epoch 1, in both sweeps
    first, second = sorted(Leaderboard(cfg.storage).table(experiment="t").to_pylist(), key=lambda r: r["sweep_id"])
    assert (first["status"], first.get("duplicate_of")) == ("stopped", None)
    assert (second["status"], second["epochs"], second.get("duplicate_of")) == ("stopped", 1, first["row_id"])
    assert Leaderboard(cfg.storage).top(10).num_rows == 1

    callback = SweepCallback(cfg, context=RowContext("s3", 5, fingerprint="fp"), out=lambda line: None)
    trial = SimpleNamespace(trial_id="r", status="TERMINATED", config={"train.freeze_depth": 0})
    work = [{"epoch": 1, "objective": 0.3, "status": "running"}, {"epoch": 2, "objective": 0.8, "status": "running"}]
    callback.on_trial_start(0, [trial], trial)
    for epoch in work:
        callback.on_trial_result(0, [trial], trial, {**epoch, "reused_row": "R0", "reused_from": "s0/old",
                                                     "reused_checkpoint": None, "reused_history": work,
                                                     "reused_wall_time_s": 29.6})
    time.sleep(0.2)   # the replay waited (paused at a rung): not the work's time
    callback.on_trial_complete(0, [trial], trial)
    (row,) = Leaderboard(cfg.storage).table(experiment="t", where="sweep_id == 's3'").to_pylist()
    assert (row["duplicate_of"], row["wall_time_s"]) == ("R0", 29.6)


def test_work_done_before_a_depth_of_every_block_ran_as_all_is_found_done(tmp_path):
    """A completed row trained with freeze_depth 5 of 5 blocks (before it ran as 'all') carries that config's hash:
    a sweep's reuse lookup, a later twin's duplicate_of and ablate's reuse looked for today's hash only, so the same
    work trained again and counted twice (a review of this stop's diff)."""
    from types import SimpleNamespace

    from factories import experiment, row
    from orchestrator.config import parse_config
    from orchestrator.config.freezing import every_block_as_all
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.leaderboard.rows import RowContext
    from orchestrator.sweep.callback import SweepCallback
    from orchestrator.sweep.runner import completed_row

    given = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 2, "freeze_depth": 5},
                                    search={"space": {"train.head_lr": {"choice": [0.001, 0.01]}}}))
    old = row(given, [{"epoch": e, "objective": 0.5 + e / 10, "config_hash": given.config_hash()} for e in (1, 2)],
              trial_id="old", sweep_id="s0", fingerprint="fp")
    board = Leaderboard(given.storage)
    board.append([old])
    today = every_block_as_all(given, 5)
    assert today.config_hash() != given.config_hash()
    assert (completed_row(today, fingerprint="fp", n_blocks=5) or {}).get("row_id") == old["row_id"]
    callback = SweepCallback(today, context=RowContext("s1", 5, fingerprint="fp"), out=lambda line: None)
    trial = SimpleNamespace(trial_id="new", status="TERMINATED", config={"train.head_lr": given.train.head_lr})
    for e in (1, 2):
        callback.on_trial_result(0, [trial], trial, {"epoch": e, "objective": 0.5 + e / 10, "status": "running"})
    callback.on_trial_complete(0, [trial], trial)
    new = board.table(experiment="t", where="sweep_id == 's1'").to_pylist()[0]
    assert (new["status"], new.get("duplicate_of")) == ("completed", old["row_id"]), new


def test_warm_start_auto_hands_over_rows_of_a_depth_of_every_block_made_before(tmp_path):
    """A completed row trained with freeze_depth 5 of 5 blocks before it ran as 'all': its value fit no choice of
    today's space ([0, 1, all]) and its recipe (its backbone_lr, which nothing trains with) was another, so warm
    starts skipped it. Read as today reads a config, it is the 'all' point (a review of this stop's diff). A range
    over depths keeps its numbers (every_block_as_all), and such a row is handed over as 5 there (its backbone_lr as
    today's: a range's 5 is a number, whose backbone_lr counts)."""
    from factories import experiment, row
    from orchestrator.config import parse_config
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep.searchers import evaluated_rows

    history = [{"epoch": e, "objective": 0.5 + e / 10, "status": "running"} for e in (1, 2)]
    for domain, expected, lr in (({"choice": [0, 1, "all"]}, "all", 0.003), ({"randint": [0, 6]}, 5, None)):
        storage_dir = tmp_path / str(expected)
        cfg = parse_config(experiment(storage_dir, "builtin:multidigits/train", train={"epochs": 2}, search={
            "searcher": "optuna", "warm_start": "auto", "space": {"train.freeze_depth": domain}}))
        old = cfg.with_values({"search": None, "train.freeze_depth": 5,
                               "train.backbone_lr": lr or cfg.train.backbone_lr})
        Leaderboard(cfg.storage).append([row(old, history, fingerprint="fp", trial_id="old")])
        evaluated = evaluated_rows(cfg, "fp", say=lambda line: None, n_blocks=5)
        assert evaluated == (({"train.freeze_depth": expected}, 0.7),), (domain, evaluated)


def test_warm_start_of_an_experiments_best_reads_a_depth_of_every_block_made_before_as_today(tmp_path):
    """`warm_start: {experiment, top}` read an earlier row of freeze_depth 5 of 5 blocks raw: "train.freeze_depth=5 does
    not fit the search space: base value used", so the old winner became the base point, silently lost (a review of
    this stop's diff; the twin of warm_start: auto's mend)."""
    from factories import experiment, row
    from orchestrator.config import parse_config
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep.searchers import first_points

    history = [{"epoch": e, "objective": 0.5 + e / 10, "status": "running"} for e in (1, 2)]
    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 2, "freeze_depth": 0},
                                  search={"searcher": "optuna", "warm_start": {"experiment": "t", "top": 2},
                                          "space": {"train.freeze_depth": {"choice": [0, 1, "all"]}}}))
    Leaderboard(cfg.storage).append([row(cfg.with_values({"search": None, "train.freeze_depth": 5}), history,
                                         fingerprint="fp", trial_id="old")])
    said = []
    assert first_points(cfg, say=said.append, n_blocks=5) == [{"train.freeze_depth": 0},
                                                               {"train.freeze_depth": "all"}], said
    assert not any("does not fit" in line for line in said), said


def test_optuna_learns_the_result_of_a_failed_trial_rerun_after_a_resume(tmp_path):
    """A failed trial is told to Optuna as the worst value seen; `tune --resume` reruns it under the same trial id,
    and Ray's OptunaSearch ignores results of a trial it has completed: the study kept the rerun's config as the
    worst (0.6) though its row says 0.95. The rerun's result is added to the study as a trial of the same params.
    Found by a helper's audit."""
    import pickle

    from factories import experiment
    from orchestrator.config import parse_config
    from orchestrator.sweep.searchers import make_searcher

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 2}, search={
        "searcher": "optuna", "space": {"train.head_lr": {"loguniform": [1e-4, 1e-2]}}}))
    searcher = make_searcher(cfg, 2, [])
    fresh = pickle.loads(pickle.dumps(searcher))          # what Tuner.restore holds (pickled at the start)
    searcher.suggest("ok")
    searcher.suggest("flaky")
    searcher.on_trial_result("ok", {"objective": 0.6, "epoch": 1})
    searcher.on_trial_complete("ok", {"objective": 0.6, "epoch": 2})
    searcher.on_trial_complete("flaky", None, error=True)   # a node lost: told as the worst
    saved = tmp_path / "searcher"
    saved.mkdir()
    searcher.save_to_dir(str(saved), session_str="x")
    fresh.restore_from_dir(str(saved))                      # --resume: the errored trial runs again, same id
    fresh.on_trial_result("flaky", {"objective": 0.95, "epoch": 1})
    fresh.on_trial_complete("flaky", {"objective": 0.95, "epoch": 2})
    study = fresh.searcher._ot_study
    told = sorted((t.state.name, t.value) for t in study.trials)
    assert told == [("COMPLETE", 0.6), ("COMPLETE", 0.6), ("COMPLETE", 0.95)], told
    params = {t.value: t.params for t in study.trials}
    assert params[0.95] == [t.params for t in study.trials if t.number == 1][0]   # the rerun's own params


def test_a_sync_sweep_that_searches_epochs_knows_each_trials_own(tmp_path):
    """make_scheduler hands SyncHalving each trial's train.epochs (from its params, as the trial's config has it),
    through a pickle as Tune keeps it; a sweep that does not search it passes nothing (max_t for all)."""
    import pickle

    from orchestrator.config import parse_config
    from orchestrator.sweep.tuner import make_scheduler

    from factories import experiment

    def sync(space):
        return parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 4},
                                       search={"space": space, "num_samples": 4, "scheduler": {"type": "sync"}}))

    sch = pickle.loads(pickle.dumps(make_scheduler(sync({"train.epochs": {"choice": [3, 9]}}), trials=4)))
    trial = FakeTrial("t0")
    trial.config = {"train.epochs": 3}
    assert sch.rungs == [1, 2, 4, 8] and sch.epochs_of(trial) == 3
    assert make_scheduler(sync({"train.head_lr": {"choice": [1e-3, 3e-3]}}), trials=4).epochs_of is None


def test_warm_start_auto_takes_earlier_trials_of_every_searched_epoch_budget_in_the_space(tmp_path):
    """With train.epochs searched, warm_start auto handed Optuna only rows at the space's largest budget: a row's
    max_epochs is its own train.epochs, so an earlier 3-epoch trial (0.90, the best) was dropped and only the 6-epoch
    one (0.70) taught (found by a helper's audit). A row is the same work when today's config at its values trains
    what it trained (train.epochs included); a budget outside today's space stays out."""
    from factories import experiment, row
    from orchestrator.config import parse_config
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.sweep.searchers import evaluated_rows

    def sweep(epochs, space):
        return parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": epochs}, search={
            "searcher": "optuna", "warm_start": "auto", "space": space}))

    cfg = sweep(6, {"train.epochs": {"choice": [3, 6]}, "train.freeze_depth": {"choice": [0, 1, 2]}})

    def hist(n, q):
        return [{"epoch": e, "objective": q if e == n else q / 2, "status": "running"} for e in range(1, n + 1)]

    Leaderboard(cfg.storage).append([
        row(cfg.with_values({"train.epochs": e, "train.freeze_depth": d}), hist(e, q), fingerprint="fp", trial_id=t)
        for t, e, d, q in (("six", 6, 1, 0.7), ("three", 3, 2, 0.9), ("four", 4, 0, 0.95))])
    told = evaluated_rows(cfg, "fp", say=lambda line: None)
    assert sorted(told, key=lambda p: p[1]) == [({"train.epochs": 6, "train.freeze_depth": 1}, 0.7),
                                                ({"train.epochs": 3, "train.freeze_depth": 2}, 0.9)]
    fixed = sweep(6, {"train.freeze_depth": {"choice": [0, 1, 2]}})     # not searched: the base's budget only
    assert evaluated_rows(fixed, "fp", say=lambda line: None) == (({"train.freeze_depth": 1}, 0.7),)


@pytest.mark.slow
def test_a_real_tune_run_cut_by_its_time_budget_writes_each_trials_row(ray_session, tmp_path):
    """Real Ray Tune (a stand-in trainable that reports an epoch a second, no training) with the sweep's callback and
    search.time_budget_s 10 (a trial's 20 epochs take 20 s): the trials the budget cut trained epochs and had no row
    (found by a helper's audit). With 4 s, a fresh clone's run on a slow day (the machine about 2.6x slower) saw no
    trial report before the budget ended the sweep: nothing trained, and the test failed on that, not on a row."""
    import time

    from ray import tune

    from factories import experiment
    from orchestrator.config import parse_config
    from orchestrator.config.sampling import param_space
    from orchestrator.leaderboard import Leaderboard
    from orchestrator.leaderboard.rows import RowContext
    from orchestrator.sweep.callback import SweepCallback

    cfg = parse_config(experiment(tmp_path, "builtin:multidigits/train", train={"epochs": 20}, search={
        "searcher": "random", "num_samples": 2, "scheduler": {"type": "none"}, "time_budget_s": 10,
        "space": {"train.freeze_depth": {"choice": [0, 1]}}}))

    def trainable(config):
        for e in range(1, 21):
            time.sleep(1.0)
            tune.report({"epoch": e, "objective": 0.1 * e, "left_accuracy": 0.5, "right_accuracy": 0.5,
                         "sum_r2": 0.1, "mean_score": 0.1 * e, "status": "running"})

    callback = SweepCallback(cfg, context=RowContext("s", 5, fingerprint="fp"), out=lambda line: None)
    tuner = tune.Tuner(tune.with_resources(trainable, {"CPU": 0.5}), param_space=param_space(cfg.search, list(cfg.tasks)),
                       tune_config=tune.TuneConfig(metric="objective", mode="max", num_samples=2,
                                                   time_budget_s=cfg.search.time_budget_s),
                       run_config=tune.RunConfig(name="budget", storage_path=str(tmp_path / "tune"),
                                                 callbacks=[callback], verbose=0))
    tuner.fit()
    rows = Leaderboard(cfg.storage).table(experiment="t").to_pylist()
    trained = {t for t, h in callback.history.items() if h}
    assert trained and {r["trial_id"] for r in rows} == trained, (rows, callback.history)
    assert all(r["status"] == "stopped" and r["reason"].startswith("cut by search.time_budget_s (10 s)") for r in rows)
