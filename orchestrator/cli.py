"""`orchestrator` command line. User mistakes end with one line on stderr and exit code 2."""
from __future__ import annotations

import json
import sys

import click
import yaml

from .errors import UserError


def _overrides(pairs: tuple[str, ...]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UserError(f"--set {pair!r} is not KEY=VALUE; write e.g. --set train.epochs=3")
        out[key] = yaml.safe_load(value)
    return out


def _load(path, sets):
    from .config import load_config

    return load_config(path, _overrides(sets))


_set_opt = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                        help="override a config value by dotted path, e.g. --set train.epochs=3")
_address_opt = click.option("--address", default=None, help="Ray cluster address (default: start a local Ray)")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Multi-task fine-tuning sweeps on Ray: train, tune, and query the leaderboard."""


@cli.command()
@click.option("--storage", default="runs", show_default=True, help="where the backbone is cached")
@click.option("--force", is_flag=True, help="retrain even if cached")
def pretrain(storage, force):
    """Pretrain the built-in backbone on the source task (digits 0-4); cached in storage."""
    from .pretrain import pretrain as run

    run(storage, force=force)


@cli.command()
@click.argument("config", type=click.Path())
@_set_opt
def validate(config, sets):
    """Check the config and the data set; trains nothing, starts no Ray."""
    from .run import resolve_storage, count_blocks, check_freeze_depth
    from .data import prepare

    cfg = resolve_storage(_load(config, sets))
    _, _, spec = prepare(cfg)
    n_blocks = count_blocks(cfg, spec.image_shape)
    check_freeze_depth(cfg.train.freeze_depth, n_blocks)
    click.echo(f"ok: {config}: {len(cfg.tasks)} tasks ({', '.join(cfg.tasks)}), {spec.n_train} train / "
               f"{spec.n_val} validation images of shape {list(spec.image_shape)}, backbone "
               f"{cfg.backbone.kind}:{cfg.backbone.name} with {n_blocks} blocks, data fingerprint {spec.fingerprint}")


@cli.command()
@click.argument("config", type=click.Path())
@_set_opt
@_address_opt
@click.option("--name", default=None, help="run name (default: train-<experiment>-<time>)")
def train(config, sets, address, name):
    """Train one configuration on Ray Train (also accepts the YAML written by `best`)."""
    from .run import train as run

    summary = run(_load(config, sets), address=address, name=name)
    click.echo(_summary_text(summary))
    if summary["status"] != "completed":
        sys.exit(1)


def _summary_text(s: dict) -> str:
    lines = [f"\n== {s['run']}: {s['status']}" + (f" ({s['error']})" if s.get("error") else "")]
    for task, m in s["tasks"].items():
        lines.append(f"  {task:>10}: " + "  ".join(f"{k}={v:.4f}" for k, v in m.items() if isinstance(v, float)))
    obj = s["objective"]
    lines += [f"  objective ({s['objective_metric']}): {obj:.4f}" if obj is not None else "  objective: n/a",
              f"  world size {s['world_size']}, steps per rank {s['rank_steps']}, epochs {s['epochs']}, "
              f"{s['wall_time_s']} s",
              f"  checkpoint: {s['checkpoint']}", f"  summary:    {s['summary_file']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
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


if __name__ == "__main__":
    main()
