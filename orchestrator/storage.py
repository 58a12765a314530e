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
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow.fs as pafs

T = TypeVar("T")
_SECRET_PARAMS = {"access_key", "secret_key", "session_token", "aws_access_key_id", "aws_secret_access_key",
                  "token", "password", "credential", "credentials"}


def is_uri(location: str) -> bool:
    return "://" in location


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow filesystem + path for a local path or any URI pyarrow knows (s3://, gs://, ...)."""
    if is_uri(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)


def join(location: str, *parts: str) -> str:
    """``join("s3://b/p?endpoint_override=x", "a", "b")`` -> ``s3://b/p/a/b?endpoint_override=x``."""
    if not is_uri(location):
        for part in parts:
            location = os.path.join(location, part)
        return os.path.normpath(location)
    s = urlsplit(location)
    path = "/".join([s.path.rstrip("/")] + [p.strip("/") for p in parts])
    return urlunsplit((s.scheme, s.netloc, path, s.query, s.fragment))


def parent(location: str) -> str:
    """The folder holding a file: ``s3://b/p/m.csv?x=1`` -> ``s3://b/p?x=1``; local paths made absolute."""
    if not is_uri(location):
        return os.path.dirname(os.path.abspath(location))
    s = urlsplit(location)
    return urlunsplit((s.scheme, s.netloc, s.path.rstrip("/").rsplit("/", 1)[0], s.query, s.fragment))


def redact(location: str) -> str:
    """The location without credentials (user:password@ and secret query parameters)."""
    if not is_uri(location):
        return location
    s = urlsplit(location)
    netloc = s.netloc.rsplit("@", 1)[-1]
    query = [(k, v) for k, v in parse_qsl(s.query, keep_blank_values=True) if k.lower() not in _SECRET_PARAMS]
    return urlunsplit((s.scheme, netloc, s.path, urlencode(query, safe=":/"), s.fragment))


def redact_text(text: str) -> str:
    """Every URI inside ``text`` redacted (for error messages and logs)."""
    return re.sub(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+", lambda m: redact(m.group(0)), text)


def has_credentials(location: str) -> bool:
    return redact(location) != location


_ADOPTED: dict[str, str] = {}


def adopt_credentials(location: str) -> str:
    """Credentials written into an ``s3://KEY:SECRET@bucket/...`` URI move to this process's environment
    (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, also given to Ray's workers, see ``adopted_env``);
    the location comes back without them. So nothing printed, pickled or stored ever holds them."""
    if not is_uri(location) or not has_credentials(location):
        return location
    s = urlsplit(location)
    query = dict(parse_qsl(s.query, keep_blank_values=True))
    key = s.username or query.get("access_key")
    secret = s.password or query.get("secret_key")
    if s.scheme == "s3" and key and secret:
        _ADOPTED.update({"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret})
        if query.get("session_token"):
            _ADOPTED["AWS_SESSION_TOKEN"] = query["session_token"]
        os.environ.update(_ADOPTED)
    return redact(location)


def adopted_env() -> dict[str, str]:
    """Environment variables Ray's processes need for credentials adopted from URIs."""
    return dict(_ADOPTED)


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
    from .errors import DataError

    try:
        return read_bytes(location)
    except (OSError, ValueError) as e:
        raise DataError(f"{where} cannot be read ({first_line(e, 120)}): fix the path or drop the row") from None


def first_line(error: BaseException, limit: int = 160) -> str:
    """An exception's first line, shortened, credentials removed: for one-line errors."""
    return redact_text((str(error).splitlines() or [type(error).__name__])[0][:limit])


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
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        _fsync_dir(folder)
        return
    fs.create_dir(os.path.dirname(path), recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(data)


def _fsync_dir(folder: str) -> None:
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
    fd, local = tempfile.mkstemp(suffix=suffix if suffix is not None else os.path.splitext(path)[1])
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
