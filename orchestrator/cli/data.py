"""`orchestrator manifest`: a class-per-folder image tree -> a manifest (registered on the main CLI group).
Mistakes raise ConfigError / DataError: one line on stderr, exit code 2. No TensorFlow, no Ray."""
from __future__ import annotations

import os

import click

from ..data.manifest import DEFAULT_EXTENSIONS, DEFAULT_IMAGE_COLUMN, DEFAULT_TASK, parse_list, write_manifest


@click.command()
@click.argument("directory", type=click.Path())
@click.option("--output", "-o", required=True, help="manifest to write: .csv or .parquet (paths are relative to its folder)")
@click.option("--tasks", default=None, metavar="A,B,...",
              help=f"one task name per folder level, e.g. left,right for DIR/<left>/<right>/img.png "
                   f"(default: one task, '{DEFAULT_TASK}')")
@click.option("--extensions", default=None, metavar="EXT,...",
              help=f"image file extensions, case-insensitive (default: {','.join(DEFAULT_EXTENSIONS)})")
@click.option("--image-column", default=DEFAULT_IMAGE_COLUMN, show_default=True,
              help="name of the path column (data.image_column in the experiment config)")
def manifest(directory, output, tasks, extensions, image_column):
    """Write a manifest of a class-per-folder tree (DIR/<class>/<image files>, as Keras's
    image_dataset_from_directory reads): one row per image, its path, one label column per task."""
    s = write_manifest(directory, output, tasks=parse_list(tasks, option="--tasks"),
                       extensions=parse_list(extensions, option="--extensions"), image_column=image_column)
    per_task = "; ".join(f"{t}: {len(c)} class{'' if len(c) == 1 else 'es'} ({_preview(c)})" for t, c in s.classes.items())
    click.echo(f"wrote {output}: {s.rows} images; {per_task}")
    if s.empty_folders:
        click.echo(f"note: {len(s.empty_folders)} class folder(s) hold no image and are not in the manifest: "
                   f"{_preview(s.empty_folders)}")
    column = "" if s.image_column == DEFAULT_IMAGE_COLUMN else f", image_column: {s.image_column}"
    tasks_yaml = ", ".join(f"{t}: {{type: classification}}" for t in s.classes)
    click.echo(f"in an experiment config: data: {{train: {os.path.relpath(s.output)}, validation: 0.2{column}, "
               f"image_size: [H, W]}}, tasks: {{{tasks_yaml}}}")

def _preview(items: list, k: int = 6) -> str:
    shown = ", ".join(map(str, items[:k]))
    return shown + (f", ... {len(items) - k} more" if len(items) > k else "")
