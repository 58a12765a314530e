"""`orchestrator pretrain | validate | train | tune | baselines | confirm | demo`: the commands that train."""
from __future__ import annotations

import math
import sys
import uuid

import click
import yaml

from .. import layout, storage
from ..console import console
from ..errors import Interrupted, UserError
from .common import address_opt, entrypoint_cpus_opt, job_opt, load, mean_pm, set_opt, storage_opt
from .query import write_best


@click.command()
@storage_opt("location", help="where the backbone is cached")
@click.option("--force", is_flag=True, help="retrain even if cached")
@job_opt
def pretrain(location, force, in_job):
    """Pretrain the built-in backbone on the source task (digits 0-4); cached in storage."""
    from ..training.pretrain import pretrain as run

    if in_job:
        from .common import require_shared_storage

        require_shared_storage(location)
    run(location, force=force, epoch_out=click.echo)


@click.command()
@click.argument("config", type=click.Path())
@set_opt
def validate(config, sets):
    """Run every check `train` and `tune` run (config, data, backbone, search space); trains nothing,
    writes nothing, starts no Ray."""
    from ..sweep.tuner import check_grace, check_objective, check_space
    from ..training.session import check, describe

    cfg = load(config, sets)
    p = check(cfg, also=[check_space, check_objective, check_grace] if cfg.search is not None else [])
    describe(p, record=None, out=click.echo)
    cfg, spec = p.cfg, p.spec
    kind = {"paths": "image files", "bytes": "encoded images", "pixels": "pixel arrays"}[spec.image_kind]
    click.echo(f"ok: {config}: {len(cfg.tasks)} tasks ({', '.join(cfg.tasks)}), {kind}, "
               f"backbone {cfg.backbone.kind}:{cfg.backbone.name} with {p.n_blocks} blocks, "
               f"data fingerprint {spec.fingerprint}, storage {storage.redact(cfg.storage)}")


@click.command()
@click.argument("config", type=click.Path())
@set_opt
@address_opt
@click.option("--name", default=None, help="run name (default: unique); an existing run of the same config continues",
              callback=lambda ctx, param, name: name if name is None else layout.require_run_name(name))
@click.option("--verbose", "-v", is_flag=True, help="also show Ray's own output")
@job_opt
@entrypoint_cpus_opt
def train(config, sets, address, name, verbose, in_job, entrypoint_cpus):
    """Train one configuration on Ray Train (also accepts the YAML written by `best`)."""
    from ..sweep.single import train_checked

    cfg = load(config, sets, in_job=in_job)
    with console(layout.log_file(cfg.storage, "train", cfg.name), verbose=verbose) as out:
        summary = train_checked(cfg, address=address, name=name, out=out, verbose=verbose,
                                reserved_cpu=entrypoint_cpus)   # a Ray job's entrypoint holds its CPUs meanwhile
    finish_run(summary)


def finish_run(summary: dict) -> None:
    """A run's outcome: a user's mistake is one line (exit 2, nothing was retried); else its summary, and exit code 1
    unless it completed."""
    if summary.get("user_error"):
        raise UserError(summary["error"])
    click.echo(summary_text(summary))
    if summary["status"] != "completed":
        sys.exit(1)


@click.command()
@click.argument("config", type=click.Path())
@set_opt
@address_opt
@click.option("--name", default=None, help="experiment name (default: the config's name)")
@click.option("--resume", is_flag=True, help="continue the latest (or --sweep) interrupted sweep of this experiment")
@click.option("--sweep", "sweep_id", default=None, help="with --resume: the sweep id to continue")
@click.option("--verbose", "-v", is_flag=True, help="also show per-epoch lines and Ray's and Tune's own output")
@job_opt
@entrypoint_cpus_opt
def tune(config, sets, address, name, resume, sweep_id, verbose, in_job, entrypoint_cpus):
    """Run a sweep (the config's `search` section); every trial lands in the leaderboard."""
    if sweep_id and not resume:
        raise UserError("--sweep names a sweep to continue: add --resume")
    tune_and_report(load(config, sets, in_job=in_job), name=name, address=address, resume=resume, sweep_id=sweep_id,
                    verbose=verbose, reserved_cpu=entrypoint_cpus)


def sweep_line(s: dict, *, resumed: bool) -> str:
    """A sweep's summary line; a resumed sweep's seconds are this command's."""
    reused = (f" ({len(s['reused'])} of them reused: same config and seed as a completed row, not rerun)"
              if s.get("reused") else "")
    return (f"\n== experiment {s['experiment']}, sweep {s['sweep_id']}: {s['trials']} trials {s['statuses']}{reused} "
            f"in {s['wall_time_s']} s{' in this command (a resumed sweep)' if resumed else ''}; leaderboard "
            f"{s['leaderboard']}")


def tune_and_report(cfg, *, name=None, address=None, resume=False, sweep_id=None, verbose=False,
                    reserved_cpu: float = 0.0) -> dict:
    from ..leaderboard import Leaderboard, render
    from ..sweep.tuner import tune as run

    log = layout.log_file(cfg.storage, "tune", name or cfg.name)
    with console(log, verbose=verbose, announce=True) as out:
        s = run(cfg, name=name, address=address, resume=resume, sweep_id=sweep_id, verbose=verbose, out=out,
                reserved_cpu=reserved_cpu)
    click.echo(sweep_line(s, resumed=resume))
    if s["statuses"]:   # rows to list (none when no trial finished: the storage may hold no leaderboard yet)
        board = Leaderboard(s["storage"])
        click.echo(render(board.top(10, experiment=s["experiment"], sweep_id=s["sweep_id"], ranked=False)))
    for hint in s.get("hints", ()):   # the best trials at one end of a searched range
        click.echo(f"hint: {hint}")
    if not s["ranked"]:   # every trial failed or diverged: the sweep answered nothing (a Ray job must not SUCCEED)
        why = (f"({s['statuses']}): nothing to rank; each row's reason column says why, and {log} has the details"
               if s["statuses"] else f"(none finished): continue it with `orchestrator tune --resume --sweep "
                                     f"{s['sweep_id']}`; {log} has the details")
        click.echo(f"error: no trial of sweep {s['sweep_id']} completed {why}", err=True)
        sys.exit(1)
    return s


@click.command()
@click.argument("config", type=click.Path())
@set_opt
@address_opt
def baselines(config, sets, address):
    """Train each task alone (same backbone, data, budget, freeze depth, rates): the Δm% reference."""
    from ..sweep.baselines import measured
    from ..training.session import check, one_off

    cfg = load(config, sets)
    with console(layout.log_file(cfg.storage, "baselines", cfg.name), verbose=False) as out:
        p = check(cfg)
        with one_off(p, owner=f"baselines of {p.cfg.name} {uuid.uuid4().hex[:8]}", record=None, address=address,
                     out=out) as session:
            found = measured(session, out=out)
    for task, value in found.items():
        click.echo(f"  {task:>12}: {p.cfg.tasks[task].score_metric} {value:.4f}")
    lost = [t for t in p.cfg.tasks if t not in found]
    if lost:
        click.echo(f"error: the single-task baselines of {', '.join(lost)} failed: see `orchestrator leaderboard "
                   f"--kind baseline -e {p.cfg.name} --format json` for the error, fix it and run again", err=True)
        sys.exit(1)


@click.command()
@click.option("--experiment", "-e", required=True, help="the experiment whose best trials to confirm")
@click.option("--top", "k", type=click.IntRange(min=1), default=3, show_default=True, help="configurations to confirm")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True, help="new seeds per configuration")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Ray Train workers per run (default: as swept)")
@click.option("--trial", "trials", multiple=True, help="also confirm this trial (repeatable), e.g. the base config")
@storage_opt("location")
@address_opt
def confirm(experiment, k, seeds, workers, trials, location, address):
    """Retrain the top K configurations with S new seeds; rank them by mean ± std (rows of kind confirm)."""
    import os

    from ..sweep.confirm import confirm as run

    location = location if storage.is_uri(location) else os.path.abspath(location)
    with console(layout.log_file(location, "confirm", experiment), verbose=False) as out:
        ranking = run(location, experiment, top=k, seeds=seeds, workers=workers, address=address, trials=trials,
                      out=out)
    click.echo(f"\nconfirmed ranking of {experiment} (objective mean ± std over seeds):")
    for i, c in enumerate(ranking, 1):
        click.echo(f"  {i}. {c['confirm_of']}: {mean_pm(c)}, seeds {c['seeds']}")


@click.command()
@storage_opt("location", help="where runs, cache and leaderboard go")
@click.option("--output", "-o", default="best.yaml", show_default=True, help="where to write the winner's config")
@click.option("--retrain-workers", default=2, show_default=True,
              help="retrain the winner on this many Ray Train workers (0: skip the retrain)")
@address_opt
def demo(location, output, retrain_workers, address):
    """Pretrain (cached), baselines, sweep the embedded default, report, write best.yaml, retrain the winner."""
    from importlib.resources import files

    from ..config import parse_config
    from ..leaderboard import Leaderboard
    from ..report import summary_lines, write_report

    data = yaml.safe_load(files("orchestrator.experiments").joinpath("demo.yaml").read_text())
    try:
        s = tune_and_report(parse_config({**data, "storage": location}), address=address)
    except Interrupted as e:   # no report, best.yaml or retrain of a partial sweep; demo has no --resume
        raise Interrupted(e.what, "run `orchestrator demo` again (the trials that completed are reused)") from None
    board = Leaderboard(s["storage"])
    report_dir = layout.report_dir(s["storage"], s["experiment"])
    if report_dir:
        result = write_report(board, s["experiment"], report_dir, sweep_id=s["sweep_id"])
        click.echo(f"report: {result['report']}")
        for line in summary_lines(result):
            click.echo(line)
    best = board.best(experiment=s["experiment"], sweep_id=s["sweep_id"])
    write_best(best, output)
    if retrain_workers:
        retrain(best, workers=retrain_workers, output=output, sweep_id=s["sweep_id"], address=address)


def retrain(best: dict, *, workers: int, output: str, sweep_id: str, address: str | None = None) -> None:
    """The demo's last step: the winner's row trained again on ``workers`` Ray Train workers, compared with it."""
    from ..config import parse_config
    from ..sweep.single import train_checked

    click.echo(f"\nretraining the winner ({best['trial_id']}) with {workers} workers: "
               f"orchestrator train {output} --set resources.workers={workers}")
    again = parse_config(best["config"]).with_values({"resources.workers": workers, "resources.cpus_per_worker": 1.0})
    with console(layout.log_file(again.storage, "train", again.name), verbose=False) as out:
        summary = train_checked(again, address=address, name=f"retrain-{best['trial_id']}-{sweep_id}",
                                out=lambda line: (out.detail if line.startswith(RETRAIN_DETAIL) else out)(line))
    finish_run(summary)
    click.echo(f"  sweep objective {best['objective']:.4f} -> retrained {summary['objective']:.4f} "
               f"(difference {abs(summary['objective'] - best['objective']) * 100:.2f} points; the sweep's maximum "
               f"is optimistic: `orchestrator confirm -e {best['experiment']}` retrains the top configurations "
               f"with new seeds)")


# the demo's retrain: what the sweep already printed goes to the retrain's log only
RETRAIN_DETAIL = ("epoch", "config:", "data:", "built-in backbone cached")


def summary_text(s: dict) -> str:
    lines = [f"\n== {s['run']}: {s['status']}" + (f" ({s['error']})" if s.get("error") else "")]
    for task, m in s["tasks"].items():
        lines.append(f"  {task:>10}: " + "  ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float)))
    obj, starts = s["objective"], s.get("attempts") or []
    restarted = len(starts) > 1   # steps count from the last (re)start, seconds from this command's
    lines += [f"  objective ({s['objective_metric']}): {obj:.4f}" if obj is not None and math.isfinite(obj)
              else "  objective: n/a",
              f"  world size {s['world_size']}, steps per rank {s['rank_steps']}"
              + (f" since its last start (epoch {starts[-1]})" if restarted else "")
              + f", epochs {s['epochs']}, {s['wall_time_s']} s" + (" in this command" if restarted else ""),
              f"  checkpoint: {s['checkpoint']}", f"  summary:    {s['summary_file']}"]
    if restarted:
        lines.append(f"  restarts:   {len(starts) - 1} (resumed from epochs {starts[1:]})")
    return "\n".join(lines)
