"""Storage: atomic writes (fsync before rename, no shared temporary names) and credentials redacted everywhere."""
import os
import threading


from orchestrator.cli import main
from orchestrator.leaderboard import Leaderboard

from factories import experiment, minimized_rows, write_yaml


def test_appends_fsync_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("rename"), real_replace(a, b))[1])
    Leaderboard(str(tmp_path)).append(minimized_rows())
    assert "rename" in events and "fsync" in events[:events.index("rename")]


def test_atomic_write_has_no_shared_temporary_name(tmp_path):
    """Two first-time writers of one cache file: both succeed and the file is one of theirs, whole."""
    from orchestrator.storage import atomic_write

    target = str(tmp_path / "cache" / "backbone.keras")
    payloads = [bytes([i]) * (4 << 20) for i in (1, 2)]
    errors = []

    def write(p):
        try:
            for _ in range(5):
                atomic_write(target, p)
        except Exception as e:  # noqa: BLE001 - any failure is the defect
            errors.append(e)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    with open(target, "rb") as f:
        assert f.read() in payloads
    assert os.listdir(tmp_path / "cache") == ["backbone.keras"]


def test_credentials_are_redacted_everywhere(tmp_path, capsys, no_ray):
    from orchestrator.storage import redact

    uri = "s3://AKIDEXAMPLE:wJalrSECRETKEY@bucket/prefix?region=us-east-1&secret_key=wJalrSECRETKEY"
    assert "SECRET" not in redact(uri) and redact(uri).startswith("s3://bucket/prefix") and "region=us-east-1" in redact(uri)
    cfg = experiment(tmp_path, "builtin:multidigits/train", storage=uri)
    code = None
    try:
        main(["validate", write_yaml(tmp_path / "e.yaml", cfg)])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    assert code in (None, 0), out.err
    assert "ok:" in out.out and "storage s3://bucket/prefix" in out.out, out.out
    assert "SECRET" not in out.out + out.err and "AKIDEXAMPLE" not in out.out + out.err
