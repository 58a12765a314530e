"""A class-per-folder image tree -> a manifest (CSV or Parquet). Pure Python + pyarrow: no TensorFlow.

The tree is what Keras's ``image_dataset_from_directory`` / ``flow_from_directory`` read:
``DIR/<class>/<image files>``. With several tasks, each folder level is one task's label:
``DIR/<left>/<right>/img.png`` with ``tasks=["left", "right"]``. The manifest has one row per image:
its path relative to the manifest's own folder (so the manifest and the images move together), then
one label column per task, holding the folder names.

Unlike Keras (which also takes images from deeper sub-folders of a class folder), every image must
sit exactly one folder per task below ``DIR``: an image at another depth is an error, because its
labels would be ambiguous. Hidden files and folders (``.name``) and files with other extensions are
skipped.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import pyarrow as pa

from .. import storage
from ..errors import ConfigError, DataError

# What Keras's image_dataset_from_directory accepts (keras.utils.image_dataset_from_directory).
DEFAULT_EXTENSIONS = ("bmp", "gif", "jpeg", "jpg", "png")
DEFAULT_TASK = "label"
DEFAULT_IMAGE_COLUMN = "image"
MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class ManifestSummary:
    output: str
    rows: int
    image_column: str
    classes: dict[str, list[str]]                     # task -> folder names with images, sorted
    empty_folders: list[str] = field(default_factory=list)   # class folders holding no image (relative to DIR)


def parse_list(value: str | None, *, option: str) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; None stays None; an empty item is a ConfigError."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",")]
    if not all(items):
        raise ConfigError(f"{option} {value!r} has an empty item: write comma-separated names, e.g. {option} a,b")
    return items


def normalize_extensions(extensions: list[str] | None) -> tuple[str, ...]:
    """``["PNG", ".jpg"]`` -> ``("png", "jpg")``; None -> Keras's default list."""
    if extensions is None:
        return DEFAULT_EXTENSIONS
    out = tuple(dict.fromkeys(e.strip().lower().lstrip(".") for e in extensions))
    if not all(out):
        raise ConfigError("--extensions has an empty item: write e.g. --extensions png,jpg")
    return out


def check_names(tasks: list[str], image_column: str) -> None:
    for t in tasks:
        if not t.isidentifier():
            raise ConfigError(f"task name {t!r} must be a plain identifier (letters, digits, _), as in the "
                              f"experiment config's 'tasks'")
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"--tasks {','.join(tasks)} names a task twice: one distinct name per folder level")
    if image_column in tasks:
        raise ConfigError(f"--image-column {image_column!r} is also a task name: pick another column name")


def _levels(n: int) -> str:
    return f"{n} folder level{'' if n == 1 else 's'}"


def scan(root: str, *, tasks: list[str], extensions: tuple[str, ...]) -> tuple[list[tuple[str, ...]], list[str]]:
    """Images under ``root`` as path parts relative to it (``("5", "7", "a.png")``), sorted; and the
    class folders (one level per task) that hold no image. DataError for an image at another depth."""
    levels = len(tasks)
    named = f"--tasks {','.join(tasks)}" if levels > 1 else f"one task ({tasks[0]})"
    found: list[tuple[str, ...]] = []
    class_dirs: set[tuple[str, ...]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):   # a linked class folder is a class (as for Keras)
        rel = os.path.relpath(folder, root)
        parts = () if rel == "." else tuple(rel.split(os.sep))
        if os.path.realpath(folder) in {os.path.realpath(os.path.join(root, *parts[:k])) for k in range(len(parts))}:
            dirs[:] = []   # a link back up the tree: walked already
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if len(parts) == levels:
            class_dirs.add(parts)
        for name in sorted(files):
            if name.startswith(".") or "." not in name or name.rsplit(".", 1)[1].lower() not in extensions:
                continue
            if len(parts) != levels:
                where = os.path.join(*parts, name) if parts else name
                hint = ("name one task per folder level with --tasks (e.g. --tasks left,right for DIR/<left>/<right>/)"
                        if len(parts) > levels else "put every image in a class folder" if not parts else
                        f"give --tasks only as many names as folder levels ({len(parts)})")
                raise DataError(f"image {where} in {root} is {_levels(len(parts))} deep, but {named} needs "
                                f"{_levels(levels)}: {hint}")
            found.append(parts + (name,))
    with_images = {p[:-1] for p in found}
    empty = sorted(os.path.join(*d) for d in class_dirs - with_images)
    return sorted(found), empty


def manifest_table(root: str, output: str, *, tasks: list[str] | None = None,
                   extensions: list[str] | None = None, image_column: str = DEFAULT_IMAGE_COLUMN
                   ) -> tuple[pa.Table, list[str]]:
    """The manifest of a class-per-folder tree as a table (paths relative to ``output``'s folder), and
    the class folders holding no image. Raises ConfigError / DataError with one line."""
    tasks = list(tasks) if tasks else [DEFAULT_TASK]
    check_names(tasks, image_column)
    exts = normalize_extensions(extensions)
    if not output.lower().endswith(MANIFEST_SUFFIXES):
        raise ConfigError(f"manifest {output!r} must end in .csv or .parquet")
    if storage.is_uri(root) or storage.is_uri(output):
        raise ConfigError("orchestrator manifest reads a local folder and writes a local manifest next to it "
                          "(paths in it are relative); copy both to remote storage afterwards")
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise ConfigError(f"image folder {root} not found: pass a folder with one sub-folder per class")
    subdirs = [d for d in os.listdir(root) if not d.startswith(".") and os.path.isdir(os.path.join(root, d))]
    if not subdirs:
        raise DataError(f"{root} has no class folders: it must hold one sub-folder per class "
                        f"(DIR/<class>/<image files>), as Keras's image_dataset_from_directory expects")
    found, empty = scan(root, tasks=tasks, extensions=exts)
    if not found:
        raise DataError(f"no images with extensions {', '.join(exts)} under {root}: check the folder or "
                        f"--extensions")
    base = os.path.dirname(os.path.abspath(output))
    paths = [os.path.relpath(os.path.join(root, *p), base).replace(os.sep, "/") for p in found]
    columns = {image_column: pa.array(paths, pa.string())}
    for i, task in enumerate(tasks):
        columns[task] = pa.array([p[i] for p in found], pa.string())
    return pa.table(columns), empty


def encode(table: pa.Table, output: str) -> bytes:
    """CSV (``.csv``) or Parquet (``.parquet``/``.pq``) bytes."""
    buf = io.BytesIO()
    if output.lower().endswith(".csv"):
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, buf)
    elif output.lower().endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        pq.write_table(table, buf)
    else:
        raise ConfigError(f"manifest {output!r} must end in .csv or .parquet")
    return buf.getvalue()


def read_back_labels(blob: bytes, output: str, column: str) -> list:
    """A label column as `orchestrator train` will read it (CSV infers types: folder "05" becomes 5)."""
    if output.lower().endswith(".csv"):
        import pyarrow.csv as pacsv

        return pacsv.read_csv(io.BytesIO(blob)).column(column).to_pylist()
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(blob), columns=[column]).column(column).to_pylist()


def write_manifest(root: str, output: str, *, tasks: list[str] | None = None, extensions: list[str] | None = None,
                   image_column: str = DEFAULT_IMAGE_COLUMN) -> ManifestSummary:
    """Scan ``root``, write the manifest atomically to ``output``; a summary of what it holds."""
    table, empty = manifest_table(root, output, tasks=tasks, extensions=extensions, image_column=image_column)
    blob = encode(table, output)
    classes = {}
    for task in table.column_names[1:]:
        names = table.column(task).to_pylist()
        read = read_back_labels(blob, output, task)
        pairs = dict(zip(names, read))
        if len(set(pairs.values())) != len(pairs):
            clash = sorted(n for n in pairs if list(pairs.values()).count(pairs[n]) > 1)[:2]
            raise DataError(f"folders {clash[0]!r} and {clash[1]!r} (task {task!r}) read back as the same label "
                            f"{pairs[clash[0]]!r} from a CSV: rename one, or write a .parquet manifest (keeps text)")
        classes[task] = sorted(pairs, key=lambda n: (not isinstance(pairs[n], (int, float)), pairs[n]
                                                      if isinstance(pairs[n], (int, float)) else n))
    storage.atomic_write(os.path.abspath(output), blob)
    return ManifestSummary(output=os.path.abspath(output), rows=table.num_rows, image_column=image_column,
                           classes=classes, empty_folders=empty)
