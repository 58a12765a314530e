"""Storage: local paths and URIs (``s3://``, ``gs://``, ``file://``) through pyarrow filesystems.

One place for: resolving a URI to ``(filesystem, path)``, atomic writes (a unique temporary name,
fsync, then rename: readers see the whole file or none, and two writers of one name never tear
each other's file), local copies of remote files (deleted after use), and redacting credentials from URIs before
anything is printed or stored.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
import uuid
from typing import Callable, Iterator, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pyarrow.fs as pafs

from . import credentials, errors, scratch

T = TypeVar("T")
def is_uri(location: str) -> bool:
    return "://" in location


def require_bucket(location: str) -> str:
    """``location`` (a URI) if it names a bucket or host (``file:///path`` needs none): ``s3://`` alone became a
    local folder ``s3:`` (urlunsplit drops an empty netloc)."""
    scheme, _, rest = credentials.split_userinfo(location)
    if scheme.lower() != "file" and not re.split(r"[/?#]", rest, maxsplit=1)[0]:
        raise errors.ConfigError(f"{scheme}:// names no bucket (or host): write {scheme}://BUCKET/folder")
    return location


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow filesystem + path for a local path or any URI pyarrow knows (s3://, gs://, ...). An ``s3://``
    location uses the credentials adopted for it (``credentials``), else the environment's."""
    if not is_uri(location):
        return pafs.LocalFileSystem(), os.path.abspath(location)
    require_bucket(location)
    if credentials.pair(location) is not None:      # written into this very URI (e.g. `best --storage`)
        location = credentials.adopt(location)
    found = credentials.lookup(location) if location.startswith("s3://") else None
    if found is None:
        return _from_uri(location, shown=location)
    _, _, base = credentials.split_userinfo(location)
    userinfo = f"{quote(found['access_key'], safe='')}:{quote(found['secret_key'], safe='')}"
    fs, path = _from_uri(f"s3://{userinfo}@{base}", shown=location)
    if found.get("session_token"):   # pyarrow's URI parser takes no token: the filesystem is rebuilt with it
        rebuild, (options,) = fs.__reduce__()
        fs = rebuild({**options, "session_token": found["session_token"]})
    return fs, path


def _from_uri(uri: str, *, shown: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem for ``uri``; one that pyarrow cannot parse is a ConfigError naming ``shown`` redacted
    (pyarrow's own message quotes the whole URI, credentials included)."""
    import pyarrow as pa

    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise errors.ConfigError(f"cannot open {redact(shown)!r}: not a location pyarrow can parse; check its scheme, and "
                          f"percent-encode spaces and other special characters in it (a space is %20)") from None


class _LocationHandler(pafs.FileSystemHandler):
    """A filesystem that pickles as its location only (credentials redacted) and builds the real one, with the
    credentials of the process it is in, on first use: what Ray Tune and Ray Train get, since they pickle it into
    their state files and into every trial and controller."""

    def __init__(self, location: str):
        self._location, self._inner = location, None

    def __reduce__(self):
        return _LocationHandler, (self._location,)

    @property
    def fs(self) -> pafs.FileSystem:
        if self._inner is None:
            self._inner = filesystem(self._location)[0]
        return self._inner

    def __eq__(self, other):
        return isinstance(other, _LocationHandler) and other._location == self._location

    def get_type_name(self):
        return "orchestrator+" + self.fs.type_name

    def normalize_path(self, path):
        return self.fs.normalize_path(path)

    def equals(self, other):
        return self == other

    def get_file_info(self, paths):
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        self.fs.delete_dir_contents("/", accept_root_dir=True)

    def delete_file(self, path):
        self.fs.delete_file(path)

    def move(self, src, dest):
        self.fs.move(src, dest)

    def copy_file(self, src, dest):
        self.fs.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.fs.open_input_stream(path)

    def open_input_file(self, path):
        return self.fs.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return self.fs.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        return self.fs.open_append_stream(path, metadata=metadata)



def file_stats(locations: list[str]) -> list[tuple]:
    """(size, mtime in ns) of each file, in order; a missing file gives (None, None). Local files in one call;
    files behind URIs from one listing per folder (an object store lists 1000 keys a request, where asking per
    file costs a round trip each), or per file where listing is refused."""
    found = {}
    local = [loc for loc in locations if not is_uri(loc)]
    infos = pafs.LocalFileSystem().get_file_info([os.path.abspath(loc) for loc in local]) if local else []
    found.update(zip(local, ((i.size, i.mtime_ns) for i in infos)))
    folders: dict[str, list[str]] = {}
    for loc in locations:
        if is_uri(loc):
            folders.setdefault(parent(loc), []).append(loc)
    for folder, locs in folders.items():
        found.update(_listed_stats(folder, locs))
    return [found.get(loc, (None, None)) for loc in locations]


def _listed_stats(folder: str, locations: list[str]) -> dict:
    fs, path = filesystem(folder)
    try:
        listed = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError:   # listing refused (access to the objects only): one request per file
        infos = fs.get_file_info([filesystem(loc)[1] for loc in locations])
        return {loc: (i.size, i.mtime_ns) for loc, i in zip(locations, infos)}
    by_name = {i.base_name: (i.size, i.mtime_ns) for i in listed if i.type == pafs.FileType.File}
    return {loc: by_name.get(unquote(urlsplit(loc).path.rsplit("/", 1)[-1]), (None, None)) for loc in locations}


def ray_filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """``filesystem`` for Ray Tune's and Ray Train's ``storage_filesystem``: one that never carries credentials
    adopted from a URI (it pickles as its location and finds them in each process, see ``credentials``)."""
    fs, path = filesystem(location)
    if not (location.startswith("s3://") and credentials.lookup(location) is not None):
        return fs, path
    return pafs.PyFileSystem(_LocationHandler(redact(location))), path


def join(location: str, *parts: str) -> str:
    """``join("s3://b/p?endpoint_override=x", "a", "b")`` -> ``s3://b/p/a/b?endpoint_override=x``."""
    if not is_uri(location):
        for part in parts:
            location = os.path.join(location, part)
        return os.path.normpath(location)
    s = urlsplit(require_bucket(location))
    path = "/".join([s.path.rstrip("/")] + [p.strip("/") for p in parts])
    return urlunsplit((s.scheme, s.netloc, path, s.query, s.fragment))


def parent(location: str) -> str:
    """The folder holding a file: ``s3://b/p/m.csv?x=1`` -> ``s3://b/p?x=1``; local paths made absolute."""
    if not is_uri(location):
        return os.path.dirname(os.path.abspath(location))
    s = urlsplit(require_bucket(location))
    return urlunsplit((s.scheme, s.netloc, s.path.rstrip("/").rsplit("/", 1)[0], s.query, s.fragment))


def redact(location: str) -> str:
    """The location without credentials (user:password@, even with ``/`` in the secret, and secret query
    parameters)."""
    return credentials.strip(location) if is_uri(location) else location


_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")


def uris_in(text: str) -> list[str]:
    """The URIs inside ``text`` (a message, a command line)."""
    return _URI_IN_TEXT.findall(text)


def redact_text(text: str) -> str:
    """Every URI inside ``text`` redacted (for error messages and logs)."""
    return _URI_IN_TEXT.sub(lambda m: redact(m.group(0)), text)


def has_credentials(location: str) -> bool:
    return redact(location) != location


def adopt_credentials(location: str) -> str:
    """Credentials written into an ``s3://KEY:SECRET@bucket/...`` URI are kept in memory for that location
    (``credentials.adopt``); the location comes back without them. So nothing printed, pickled or stored ever
    holds them."""
    return credentials.adopt(location)


def exists(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_file(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type == pafs.FileType.File


def read_bytes(location: str) -> bytes:
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as f:
        return f.read()


def read_bytes_or_fail(location: str, *, where: str) -> bytes:
    """A file's bytes; a missing or unreadable file is a DataError naming ``where``."""
    try:
        return read_bytes(location)
    except (OSError, ValueError, errors.ConfigError) as e:   # ConfigError: a URI pyarrow cannot parse
        raise errors.DataError(f"{where} cannot be read ({first_line(e, 120)}): fix the path or drop the row") from None


def line_of(text: str, *, last: bool = False, limit: int = 160) -> str:
    """A message's first (or last) non-empty line for a one-line error: credentials removed, then shortened (cut
    first, a URI whose '@' fell past the cut kept its key). "" for a message without one."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return redact_text(lines[-1 if last else 0])[:limit] if lines else ""


def first_line(error: BaseException, limit: int = 160) -> str:
    """An exception's first line (its type's name if it has none), as ``line_of``."""
    return line_of(str(error), limit=limit) or type(error).__name__


def atomic_write(location: str, data: bytes | memoryview) -> None:
    """Write ``data`` so that readers see the old file, or all of the new one.

    Local: a unique temporary file in the same folder, flushed and fsynced, renamed over the target,
    then the folder fsynced (so the rename survives a crash). Object stores: one PUT, which is atomic."""
    fs, path = filesystem(location)
    if isinstance(fs, pafs.LocalFileSystem):
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~current_umask())   # mkstemp makes 0600: honour the umask (group-shared folders)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        fsync_dir(folder)
        return
    fs.create_dir(os.path.dirname(path), recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(data)


def current_umask() -> int:
    """This process's umask, read without changing it where Linux says it (``os.umask`` sets it, racing threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder: str) -> None:
    """Make the renames into ``folder`` durable (best effort: a filesystem that cannot fsync a folder is left)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def local_file(location: str, *, suffix: str | None = None) -> Iterator[str]:
    """``with local_file(uri) as path``: a local path for a file that may live behind a URI (a unique temporary
    copy, deleted when the block ends; a local file is used in place)."""
    if not is_uri(location):
        yield location
        return
    fs, path = filesystem(location)
    fd, local = scratch.mkstemp(suffix if suffix is not None else os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "wb") as out, fs.open_input_stream(path) as src:
            while chunk := src.read(1 << 24):
                out.write(chunk)
        yield local
    finally:
        os.unlink(local)


def unique_name(prefix: str, suffix: str = "") -> str:
    return f"{prefix}{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}{suffix}"


def retry(fn: Callable[[], T], *, attempts: int = 4, delay_s: float = 0.5, what: str = "write") -> T:
    """Call ``fn`` until it succeeds, up to ``attempts`` times with a growing pause (storage hiccups)."""
    for i in range(attempts):
        try:
            return fn()
        except OSError:
            if i == attempts - 1:
                raise
            time.sleep(delay_s * (2 ** i))
    raise AssertionError("unreachable")
