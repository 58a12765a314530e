"""`orchestrator` command line. User mistakes end with one line on stderr and exit code 2."""
from __future__ import annotations

import json
import os
import sys

import click
import yaml

from .. import storage
from ..console import console
from ..errors import UserError


def _overrides(pairs: tuple[str, ...]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UserError(f"--set {pair!r} is not KEY=VALUE; write e.g. --set train.epochs=3")
        out[key] = yaml.safe_load(value)
    return out


def _load(path, sets, *, in_job: bool = False):
    from ..config import load_config

    overrides = _overrides(sets)
    if in_job:   # a Ray job's working directory is temporary: its storage must be shared
        from pathlib import Path

        from .jobs import _raw_storage, require_shared_storage

        require_shared_storage(str(overrides.get("storage") or _raw_storage(Path(path))))
    return load_config(path, overrides)


_set_opt = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                        help="override a config value by dotted path, e.g. --set train.epochs=3")
_address_opt = click.option("--address", default=None, help="Ray cluster address (default: start a local Ray)")
_job_opt = click.option("--in-ray-job", "in_job", is_flag=True, hidden=True,
                        help="set by jobs/*.py: refuse storage that would be lost with the job's working directory")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Multi-task fine-tuning sweeps on Ray: train, tune, and query the leaderboard."""


@cli.command()
@click.option("--storage", default="runs", show_default=True, help="where the backbone is cached")
@click.option("--force", is_flag=True, help="retrain even if cached")
@_job_opt
def pretrain(storage, force, in_job):
    """Pretrain the built-in backbone on the source task (digits 0-4); cached in storage."""
    from ..train.pretrain import pretrain as run

    if in_job:
        from .jobs import require_shared_storage

        require_shared_storage(storage)
    run(storage, force=force, epoch_out=click.echo)


@cli.command()
@click.argument("config", type=click.Path())
@_set_opt
def validate(config, sets):
    """Run every check `train` and `tune` run (config, data, backbone, search space); trains nothing,
    writes nothing, starts no Ray."""
    from ..train.driver import advice, check

    p = check(_load(config, sets))
    cfg, spec, n_blocks = p.cfg, p.spec, p.n_blocks
    if cfg.search is not None:
        from ..sweep.tuner import check_space

        check_space(p)
    click.echo("resolved config: " + json.dumps(cfg.public_dump(), sort_keys=True))
    for line in advice(p):
        click.echo(line)
    kind = {"paths": "image files", "bytes": "encoded images", "pixels": "pixel arrays"}[spec.image_kind]
    click.echo(f"ok: {config}: {len(cfg.tasks)} tasks ({', '.join(cfg.tasks)}), {kind}, "
               f"backbone {cfg.backbone.kind}:{cfg.backbone.name} with {n_blocks} blocks, "
               f"data fingerprint {spec.fingerprint}, storage {storage.redact(cfg.storage)}")


@cli.command()
@click.argument("config", type=click.Path())
@_set_opt
@_address_opt
@click.option("--name", default=None, help="run name (default: unique); an existing run of the same config continues")
@click.option("--verbose", "-v", is_flag=True, help="also show Ray's own output")
@_job_opt
def train(config, sets, address, name, verbose, in_job):
    """Train one configuration on Ray Train (also accepts the YAML written by `best`)."""
    from ..train.driver import train as run

    cfg = _load(config, sets, in_job=in_job)
    with console(_log_path(cfg, "train"), verbose=verbose) as out:
        summary = run(cfg, address=address, name=name, out=out, verbose=verbose)
    if summary.get("user_error"):
        raise UserError(summary["error"])   # one line, exit 2: nothing was retried
    click.echo(_summary_text(summary))
    if summary["status"] != "completed":
        sys.exit(1)


@cli.command("tune")
@click.argument("config", type=click.Path())
@_set_opt
@_address_opt
@click.option("--name", default=None, help="experiment name (default: the config's name)")
@click.option("--resume", is_flag=True, help="continue the latest (or --sweep) interrupted sweep of this experiment")
@click.option("--sweep", "sweep_id", default=None, help="with --resume: the sweep id to continue")
@click.option("--verbose", "-v", is_flag=True, help="also show Ray's and Tune's own output")
@_job_opt
def tune_cmd(config, sets, address, name, resume, sweep_id, verbose, in_job):
    """Run a sweep (the config's `search` section); every trial lands in the leaderboard."""
    if sweep_id and not resume:
        raise UserError("--sweep names a sweep to continue: add --resume")
    _tune_and_report(_load(config, sets, in_job=in_job), name=name, address=address, resume=resume, sweep_id=sweep_id,
                     verbose=verbose)


def _log_path(cfg, what: str) -> str:
    """Full logs go under local storage (logs/); for remote storage, to a local folder named after it."""
    import time

    name = f"{what}-{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    if "://" not in cfg.storage:
        return os.path.join(os.path.abspath(cfg.storage), "logs", name)
    return os.path.join(os.path.abspath("orchestrator-logs"), name)


def _tune_and_report(cfg, *, name=None, address=None, resume=False, sweep_id=None, verbose=False) -> dict:
    from ..leaderboard.leaderboard import Leaderboard, render
    from ..sweep.tuner import tune

    log = _log_path(cfg, "tune")
    click.echo(f"full log: {log}")
    with console(log, verbose=verbose) as out:
        s = tune(cfg, name=name, address=address, resume=resume, sweep_id=sweep_id, verbose=verbose, out=out)
    click.echo(f"\n== experiment {s['experiment']}, sweep {s['sweep_id']}: {s['trials']} trials {s['statuses']} in "
               f"{s['wall_time_s']} s; leaderboard {s['leaderboard']}")
    click.echo(render(Leaderboard(s["storage"]).top(10, experiment=s["experiment"], sweep_id=s["sweep_id"])))
    return s


@cli.command()
@click.option("--storage", default="runs", show_default=True, help="where runs, cache and leaderboard go")
@click.option("--output", "-o", default="best.yaml", show_default=True, help="where to write the winner's config")
@click.option("--retrain-workers", default=2, show_default=True,
              help="retrain the winner on this many Ray Train workers (0: skip the retrain)")
@_address_opt
def demo(storage, output, retrain_workers, address):
    """Pretrain (cached), baselines, sweep the embedded default, report, write best.yaml, retrain the winner."""
    from importlib.resources import files

    from ..config.schema import parse_config
    from ..leaderboard.leaderboard import Leaderboard
    from ..report.report import summary_lines, write_report
    from ..train.driver import train as run_train

    data = yaml.safe_load(files("orchestrator.experiments").joinpath("demo.yaml").read_text())
    cfg = parse_config({**data, "storage": storage})
    s = _tune_and_report(cfg, address=address)
    board = Leaderboard(s["storage"])
    report_dir = os.path.join(s["storage"], "reports", s["experiment"]) if "://" not in s["storage"] else None
    if report_dir:
        result = write_report(board, s["experiment"], report_dir, sweep_id=s["sweep_id"])
        click.echo(f"report: {result['report']}")
        for line in summary_lines(result):
            click.echo(line)
    best = board.best(experiment=s["experiment"], sweep_id=s["sweep_id"])
    write_best(best, output)
    if retrain_workers:
        click.echo(f"\nretraining the winner ({best['trial_id']}) with {retrain_workers} workers: "
                   f"orchestrator train {output} --set resources.workers={retrain_workers}")
        again = parse_config(best["config"]).with_values({"resources.workers": retrain_workers,
                                                           "resources.cpus_per_worker": 1.0})
        with console(_log_path(again, "train"), verbose=False) as out:
            summary = run_train(again, address=address, name=f"retrain-{s['sweep_id']}-{best['trial_id']}",
                                out=lambda line: None if line.startswith(("epoch", "resolved")) else out(line))
        click.echo(_summary_text(summary))
        click.echo(f"  sweep objective {best['objective']:.4f} -> retrained {summary['objective']:.4f} "
                   f"(difference {abs(summary['objective'] - best['objective']) * 100:.2f} points; the sweep's maximum "
                   f"is optimistic: `orchestrator confirm -e {s['experiment']}` retrains the top configurations "
                   f"with new seeds)")


@cli.command()
@click.argument("config", type=click.Path())
@click.option("--address", required=True, help="Ray dashboard URL, e.g. http://127.0.0.1:8265")
@click.option("--entrypoint", type=click.Choice(["tune", "train"]), default="tune", show_default=True)
@click.option("--follow/--no-follow", default=False, help="stream the job's logs until it ends")
@click.option("--wait/--no-wait", default=True, help="wait for the job to end (default) or return at once")
@click.option("--working-dir", default=None, type=click.Path(file_okay=False),
              help="directory uploaded with the job (default: this project's root)")
@click.option("--resume", is_flag=True, help="tune: continue the experiment's latest interrupted sweep")
def submit(config, address, entrypoint, follow, wait, working_dir, resume):
    """Submit a sweep (or a train run) to a Ray cluster as a Ray job."""
    from .jobs import submit as run

    if resume and entrypoint != "tune":
        raise UserError("--resume continues a sweep: use it with --entrypoint tune")
    sys.exit(run(config, address, entrypoint_script=f"jobs/{entrypoint}.py", follow=follow, wait=wait,
                 working_dir=working_dir, extra_args=["--resume"] if resume else [], out=click.echo))


@cli.command()
@click.argument("job_id", required=False)
@click.option("--address", required=True, help="Ray dashboard URL")
@click.option("--logs", "show_logs", is_flag=True, help="print the job's logs")
@click.option("--follow", is_flag=True, help="with --logs: keep streaming")
def jobs(job_id, address, show_logs, follow):
    """List Ray jobs, or show one job's status (and logs)."""
    from .jobs import logs, status

    if show_logs:
        if not job_id:
            raise click.UsageError("--logs needs a JOB_ID")
        sys.exit(logs(address, job_id, follow=follow, out=click.echo))
    sys.exit(status(address, job_id, out=click.echo))


def _summary_text(s: dict) -> str:
    lines = [f"\n== {s['run']}: {s['status']}" + (f" ({s['error']})" if s.get("error") else "")]
    for task, m in s["tasks"].items():
        lines.append(f"  {task:>10}: " + "  ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float)))
    obj = s["objective"]
    lines += [f"  objective ({s['objective_metric']}): {obj:.4f}" if obj is not None else "  objective: n/a",
              f"  world size {s['world_size']}, steps per rank {s['rank_steps']}, epochs {s['epochs']}, "
              f"{s['wall_time_s']} s",
              f"  checkpoint: {s['checkpoint']}", f"  summary:    {s['summary_file']}"]
    if len(s.get("attempts") or []) > 1:
        lines.append(f"  restarts:   {len(s['attempts']) - 1} (resumed from epochs {s['attempts'][1:]})")
    return "\n".join(lines)


@cli.command()
@click.argument("config", type=click.Path())
@_set_opt
@_address_opt
def baselines(config, sets, address):
    """Train each task alone (same backbone, data, budget, freeze depth, rates): the Δm% reference."""
    from ..sweep.baselines import baselines_for
    from ..train.driver import check, ensure_pretrained, init_ray, ship_backbone, ship_data

    cfg = _load(config, sets)
    with console(_log_path(cfg, "baselines"), verbose=False) as out:
        p = check(cfg)
        ensure_pretrained(p.cfg, out=out)
        init_ray(address)
        found = baselines_for(p, data=ship_data(p), backbone_ref=ship_backbone(p.cfg), out=out)
    for task, value in found.items():
        click.echo(f"  {task:>12}: {p.cfg.tasks[task].score_metric} {value:.4f}")


@cli.command()
@click.option("--experiment", "-e", required=True, help="the experiment whose best trials to confirm")
@click.option("--top", "k", type=click.IntRange(min=1), default=3, show_default=True, help="configurations to confirm")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True, help="new seeds per configuration")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Ray Train workers per run (default: as swept)")
@click.option("--trial", "trials", multiple=True, help="also confirm this trial (repeatable), e.g. the base config")
@click.option("--storage", default="runs", show_default=True, help="storage holding the leaderboard")
@_address_opt
def confirm(experiment, k, seeds, workers, trials, storage, address):
    """Retrain the top K configurations with S new seeds; rank them by mean ± std (rows of kind confirm)."""
    from ..sweep.confirm import confirm as run

    storage = storage if "://" in storage else os.path.abspath(storage)
    with console(os.path.join(storage, "logs", f"confirm-{experiment}.log") if "://" not in storage else None,
                 verbose=False) as out:
        ranking = run(storage, experiment, top=k, seeds=seeds, workers=workers, address=address, trials=trials,
                      out=out)
    click.echo(f"\nconfirmed ranking of {experiment} (objective mean ± std over seeds):")
    for i, c in enumerate(ranking, 1):
        click.echo(f"  {i}. {c['confirm_of']}: {c['mean']:.4f} ± {c['std']:.4f} (n={c['n']}, seeds {c['seeds']})")


from .query import best, leaderboard, pareto, write_best  # noqa: E402 - registered below
from .report import report  # noqa: E402
from .data import manifest  # noqa: E402 - registered below

cli.add_command(leaderboard)
cli.add_command(best)
cli.add_command(pareto)
cli.add_command(report)
cli.add_command(manifest)


def main(argv: list[str] | None = None) -> None:
    from ..console import quiet_warnings

    quiet_warnings()
    try:
        cli.main(args=argv, prog_name="orchestrator", standalone_mode=False)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(2)

