"""Storage: atomic writes (fsync before rename, no shared temporary names) and credentials redacted everywhere."""
import json
import os
import threading
from urllib.parse import quote

import pytest

from orchestrator.cli import main
from orchestrator.leaderboard import Leaderboard

from factories import experiment, minimized_rows, run_cli, write_yaml


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


# A secret as AWS issues them: '/' and '+' inside (urlsplit does not see such userinfo at all).
KEY, SECRET = "AKIDSLASHPLUS", "wJal/rXUt+nFEMI/K7MDENG+bPxRfiCY"


def test_secrets_with_slash_and_plus_are_redacted():
    from orchestrator.storage import redact, redact_text

    uri = f"s3://{KEY}:{SECRET}@bucket/prefix/run?region=us-east-1&endpoint_override=h:1"
    assert redact(uri) == "s3://bucket/prefix/run?region=us-east-1&endpoint_override=h:1"
    text = f"cannot open '{uri}' (403) and {uri.replace(SECRET, SECRET.replace('/', '%2F').replace('+', '%2B'))}"
    assert SECRET.split("/")[0] not in redact_text(text) and "%2B" not in redact_text(text)
    assert redact("s3://bucket/a@b/c") == "s3://bucket/a@b/c"        # an '@' in a path is not userinfo
    assert redact("s3://bucket/t:1@2/c") == "s3://bucket/t:1@2/c"


def test_a_location_without_credentials_is_shown_as_given(no_ray):
    """Redacting rebuilt every URI, credentials or not: ``sqlite:////abs/mlflow.db`` was shown as the relative
    ``sqlite://abs/mlflow.db``, ``s3://`` as ``s3:``, and a URI so rewritten counted as one holding credentials."""
    from orchestrator.storage import has_credentials, redact

    for uri in ("sqlite:////abs/mlflow.db", "s3://", "s3://b/p?", "file:///x//y", "gs://b/p?a=1#f"):
        assert (redact(uri), has_credentials(uri)) == (uri, False), uri
    assert (redact("s3://K:S@b/p?"), has_credentials("s3://K:S@b/p?")) == ("s3://b/p", True)


def test_an_at_sign_in_the_path_after_credentials_stays_in_the_path(no_ray):
    """The userinfo ends at the first '@' (RFC 3986: userinfo percent-encodes '@', a path need not): the last one sent
    ``s3://KEY:SECRET@bucket/runs/a@b`` to bucket 'b' with the secret 'SECRET@bucket/runs/a'."""
    from orchestrator import credentials
    from orchestrator.storage import redact

    uri = f"s3://{KEY}:{SECRET}@bucket/runs/a@b"
    assert credentials.split_userinfo(uri) == ("s3", f"{KEY}:{SECRET}", "bucket/runs/a@b")
    assert redact(uri) == "s3://bucket/runs/a@b" and credentials.pair(uri)["secret_key"] == SECRET
    assert credentials.adopt(uri) == "s3://bucket/runs/a@b"
    assert credentials.lookup("s3://bucket/runs/a@b/leaderboard")["secret_key"] == SECRET
    # an unencoded '@' inside a password still belongs to it: the userinfo ends at the last '@' before the path
    assert credentials.split_userinfo("s3://minio:p@ss@bucket/runs@2") == ("s3", "minio:p@ss", "bucket/runs@2")
    assert credentials.split_userinfo(f"s3://{KEY}:a/b@c@bucket/x") == ("s3", f"{KEY}:a/b@c", "bucket/x")
    assert redact("http://admin:p@ss@head:8265") == "http://head:8265"


def test_a_question_mark_or_hash_in_a_secret_is_not_the_query(no_ray):
    """A password with an unencoded '?' or '#' (a MinIO password a user chose) was printed whole: the userinfo search
    stopped at the first '?' or '#' as the query's or fragment's start. After ``user:`` they belong to the secret
    up to the '@'; a query after a path, or after a bucket without userinfo, is still a query."""
    from orchestrator import credentials
    from orchestrator.storage import redact, redact_text

    for secret in ("p?ss", "p#ss", "a?b#c/d", "?#"):
        uri = f"s3://minio:{secret}@bucket/runs?endpoint_override=h:9000"
        assert credentials.split_userinfo(uri) == ("s3", f"minio:{secret}", "bucket/runs?endpoint_override=h:9000")
        assert credentials.pair(uri)["secret_key"] == secret and credentials.holds_secret(uri)
        assert redact(uri) == "s3://bucket/runs?endpoint_override=h:9000", redact(uri)
        assert secret not in redact_text(f"cannot open '{uri}'")
    assert credentials.split_userinfo("s3://bucket?x=a@b") == ("s3", None, "bucket?x=a@b")
    assert credentials.split_userinfo("s3://bucket/p?x=a@b") == ("s3", None, "bucket/p?x=a@b")
    assert redact("s3://k:s@bucket/p?x=a@b") == "s3://bucket/p?x=a%40b"   # the query re-encoded, as before


def test_percent_encoded_secrets_are_unquoted_and_kept_per_storage(no_ray):
    from orchestrator import credentials

    quoted = SECRET.replace("/", "%2F").replace("+", "%2B")
    a = credentials.adopt(f"s3://{KEY}:{quoted}@bucket-a/exp?region=us-east-1")
    b = credentials.adopt("s3://OTHERKEY:other%2Fsecret@bucket-b/exp")
    assert a == "s3://bucket-a/exp?region=us-east-1" and b == "s3://bucket-b/exp"
    assert credentials.lookup("s3://bucket-a/exp/leaderboard/x.parquet?region=us-east-1") == \
        {"access_key": KEY, "secret_key": SECRET}
    assert credentials.lookup("s3://bucket-b/exp/sweeps")["secret_key"] == "other/secret"
    assert credentials.lookup("s3://bucket-c/exp") is None
    assert SECRET not in repr(os.environ) and "other/secret" not in repr(os.environ)


def test_filesystems_given_to_ray_hold_no_secret(no_ray):
    """Tune pickles its storage filesystem into tuner.pkl and into every trial: only the location goes with it."""
    import pickle

    import pyarrow.fs as pafs

    from orchestrator import credentials, storage

    location = credentials.adopt(f"s3://{KEY}:{SECRET}@bucket/exp?endpoint_override=127.0.0.1:1&scheme=http")
    fs, path = storage.ray_filesystem(location)
    assert path == "bucket/exp" and isinstance(fs, pafs.PyFileSystem)
    blob = pickle.dumps(fs)
    assert SECRET.encode() not in blob and KEY.encode() not in blob
    direct, _ = storage.filesystem(location)
    assert SECRET.encode() in pickle.dumps(direct)        # the driver's own filesystem does hold it, in memory


def test_backbone_uris_are_redacted_in_rows_and_configs(tmp_path):
    from factories import experiment
    from orchestrator.config.schema import ExperimentConfig
    from orchestrator.leaderboard.rows import backbone_key

    cfg = ExperimentConfig.model_validate(experiment(tmp_path, "builtin:multidigits/train", backbone={
        "kind": "file", "path": f"s3://{KEY}:{SECRET}@bucket/models/bb.keras"}))
    assert backbone_key(cfg) == "file:s3://bucket/models/bb.keras:none"
    assert SECRET not in json.dumps(cfg.public_dump()) and SECRET not in json.dumps(cfg.run_fields())


def test_manifest_image_uris_are_redacted_in_errors(s3_server, tmp_path, capsys):
    from factories import experiment, run_cli, write_yaml

    # A live S3 server that has no such bucket answers at once (a closed port costs the AWS SDK's 6 s of retries).
    image = f"s3://{KEY}:{SECRET}@no-such-bucket/img/0.png?endpoint_override={s3_server}&scheme=http"
    rows = "".join(f"{image},{i % 10},{i % 10},{i}\n" for i in range(8))
    (tmp_path / "m.csv").write_text("image,left,right,sum\n" + rows)
    cfg = experiment(tmp_path, str(tmp_path / "m.csv"), data={"image_size": [12, 12]})
    code, out, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "s3://no-such-bucket/img/0.png" in err, err
    assert SECRET.split("/")[0] not in out + err and KEY not in out + err, err


def test_a_uri_with_credentials_opens_as_given(no_ray):
    """`best --storage s3://KEY:SECRET@...`: the pair is taken from the very URI, even with '/' and '+'."""
    import pickle

    from orchestrator import storage

    fs, path = storage.filesystem(f"s3://{KEY}:{SECRET}@bucket3/exp/x.parquet?endpoint_override=127.0.0.1:1&scheme=http")
    assert path == "bucket3/exp/x.parquet" and SECRET.encode() in pickle.dumps(fs)


@pytest.mark.slow
def test_credentials_adopted_by_the_driver_reach_a_ray_task_after_publish(ray_session):
    """The holder actor must outlive publish(): a named actor dies with its last handle (it did: lookup was None)."""
    import gc

    from orchestrator import credentials

    credentials.adopt("s3://KEY:se/cr+et@bucket-for-publish/runs?endpoint_override=127.0.0.1:9")
    credentials.publish()
    gc.collect()

    @ray_session.remote(num_cpus=0)
    def probe():
        from orchestrator import credentials as inside

        return inside.lookup("s3://bucket-for-publish/runs/exp/?endpoint_override=127.0.0.1:9")   # its endpoint

    try:
        assert ray_session.get(probe.remote()) == {"access_key": "KEY", "secret_key": "se/cr+et"}
    finally:
        credentials.forget()


@pytest.mark.slow
def test_credentials_are_published_to_a_new_ray_after_a_restart(ray_session):
    """A process kept the first Ray's holder actor across ray.shutdown() and a new ray.init() (a notebook's restart;
    a test's): job ids start again at 1 in a new Ray, so publish called the old handle and failed with "Can't find
    actor ... from a different cluster" (seen in a fresh clone's slow suite after a test restarted Ray)."""
    from orchestrator import credentials
    from orchestrator.training.session import init_ray

    credentials.adopt("s3://KR:SR@bucket-restart/runs")
    try:
        credentials.publish()
        ray_session.shutdown()
        init_ray(None, num_gpus=1)   # as the ray_session fixture starts it: later tests keep it
        credentials.publish()

        @ray_session.remote(num_cpus=0)
        def probe():
            from orchestrator import credentials as inside

            return inside.lookup("s3://bucket-restart/runs/x")

        assert ray_session.get(probe.remote()) == {"access_key": "KR", "secret_key": "SR"}
    finally:
        credentials.forget()


@pytest.mark.slow
def test_a_ray_process_finds_credentials_published_after_its_first_lookup(ray_session):
    """A process fetched the job's pairs once: a pair the driver adopted and published later (or any, when its first
    lookup came before the first publish) was never seen there, and the environment's credentials were used."""
    from orchestrator import credentials

    @ray_session.remote(num_cpus=0)
    class Probe:
        def lookup(self, location):
            from orchestrator import credentials as inside

            return inside.lookup(location)

    probe = Probe.remote()
    try:
        assert ray_session.get(probe.lookup.remote("s3://bucket-later-a/x")) is None   # nothing published yet
        credentials.adopt("s3://KA:SA@bucket-later-a/runs")
        credentials.publish()
        assert ray_session.get(probe.lookup.remote("s3://bucket-later-a/runs/x")) == {"access_key": "KA",
                                                                                      "secret_key": "SA"}
        credentials.adopt("s3://KB:SB@bucket-later-b/runs")
        credentials.publish()
        assert ray_session.get(probe.lookup.remote("s3://bucket-later-b/runs/x")) == {"access_key": "KB",
                                                                                      "secret_key": "SB"}
    finally:
        credentials.forget()


def test_secrets_the_product_cannot_keep_are_refused_before_they_are_stored(tmp_path, capsys, no_ray):
    """Only S3 key pairs are taken out of a URI and kept in memory. An Azure client_secret (or account key, SAS
    token) in a data/storage URI, and a password in search.mlflow, went into config.json, sweep.json, every
    leaderboard row and printed lines as written: they are refused in one line that names the way to pass them."""
    from orchestrator.storage import redact

    azure = "abfs://acct.dfs.core.windows.net/c/train.parquet?tenant_id=t&client_id=c&client_secret=TOPSECRET"
    assert "TOPSECRET" not in redact(azure) and "client_id=c" in redact(azure)
    assert redact("abfs://container@acct.dfs.core.windows.net/data") == "abfs://container@acct.dfs.core.windows.net/data"
    for field, value, fix in (
            ("data", {"train": azure, "validation": 0.25}, "AZURE_CLIENT_SECRET"),
            ("search", {"space": {"train.head_lr": {"loguniform": [1e-4, 1e-2]}},
                        "mlflow": "https://alice:TOPSECRET@mlflow.example.com"}, "MLFLOW_TRACKING_PASSWORD")):
        cfg = experiment(tmp_path, "builtin:multidigits/train", **{field: value})
        code, out, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
        assert code == 2 and "\n" not in err and fix in err, err
        assert "TOPSECRET" not in out + err
        assert not (tmp_path / "runs").exists() or "TOPSECRET" not in "".join(
            p.read_text(errors="ignore") for p in (tmp_path / "runs").rglob("*") if p.is_file())


PRESIGNED = ("https://bucket.s3.amazonaws.com/train.parquet?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDQ%2F2026"
             "&X-Amz-Security-Token=TOPSECRET1&X-Amz-Signature=TOPSECRET2&X-Amz-SignedHeaders=host",
             "https://storage.googleapis.com/b/t.parquet?X-Goog-Credential=svc%2F2026&X-Goog-Signature=TOPSECRET3",
             "s3://bucket/runs?Signature=TOPSECRET4&AWSAccessKeyId=AKIDQ", "https://h.example.com/t?api_key=TOPSECRET5")


@pytest.mark.parametrize("uri", PRESIGNED)
def test_presigned_url_secrets_are_redacted_and_refused(tmp_path, capsys, no_ray, uri):
    """A pre-signed URL's signature and session token (AWS X-Amz-*, GCS X-Goog-*, S3 v2 Signature) and an api_key
    passed every check: validate printed them in its error, submit would have uploaded a config holding them, and
    config.json would store them (found by a helper's audit)."""
    from orchestrator import credentials
    from orchestrator.storage import redact

    assert credentials.holds_secret(uri) and "TOPSECRET" not in redact(uri)
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in redact(uri) or "X-Amz" not in uri   # the rest of the query stays
    cfg = experiment(tmp_path, uri)
    code, out, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", cfg))
    assert code == 2 and "\n" not in err and "holds" in err and "TOPSECRET" not in out + err, err
    from orchestrator.cli import jobs
    from orchestrator.errors import ConfigError

    with pytest.raises(ConfigError, match="the command line holds credentials"):   # submit: not on the entrypoint
        jobs.refuse_secret_args(["--set", f"data.train={uri}"])


@pytest.mark.parametrize("uri", ["abfs://c@acct.dfs.core.windows.net/runs?credential_kind=cli",
                                 "gs://bucket/runs?credential_token_expiration=2026-12-31T00:00:00Z"])
def test_query_options_that_name_a_credential_but_hold_none_are_kept(uri, no_ray):
    """Any query name holding 'credential' or 'token' counts as a secret (pre-signed URLs); pyarrow's documented
    options that pick a credential type or its expiry hold none, and were refused by adopt (this session's review)."""
    from orchestrator import credentials

    assert not credentials.holds_secret(uri) and credentials.adopt(uri) == uri


def test_a_pair_adopted_for_one_endpoint_is_not_sent_to_another(no_ray):
    """Pairs were kept by bucket and path only: a MinIO pair (endpoint_override) was also handed to AWS's bucket of
    the same name. The endpoint is part of where a pair belongs."""
    from orchestrator import credentials

    credentials.adopt(f"s3://{KEY}:{SECRET}@runs/exp?endpoint_override=127.0.0.1:9000&scheme=http")
    assert credentials.lookup("s3://runs/exp/leaderboard/x.parquet?endpoint_override=127.0.0.1:9000&scheme=http") \
        == {"access_key": KEY, "secret_key": SECRET}
    assert credentials.lookup("s3://runs/exp/leaderboard/x.parquet") is None
    assert credentials.lookup("s3://runs/exp?endpoint_override=10.0.0.9:9000") is None


def test_mlflow_uris_without_secrets_are_accepted_as_written():
    """The secret check compares a URI's parts: redacting rewrites some URIs it keeps (sqlite:////abs/path), which
    had refused a plain SQLite tracking store."""
    from orchestrator.config.space import SearchConfig

    space = {"train.head_lr": {"loguniform": [1e-4, 1e-2]}}
    for uri in ("sqlite:////tmp/x/mlflow.db", "sqlite:///mlflow.db", "file:///tmp/mlruns", "http://127.0.0.1:5000"):
        assert SearchConfig.model_validate({"space": space, "mlflow": uri}).mlflow == uri


def test_image_files_behind_uris_rewritten_in_place_are_other_data(s3_server, tmp_path, monkeypatch):
    """The data fingerprint (which decides what done work is reused) covered the size and mtime of local image
    files only: images behind URIs counted by path, so a manifest's S3 images rewritten in place kept the
    fingerprint and the old results were reused. Their sizes and mtimes now come from one listing per folder."""
    import io

    import numpy as np
    import pyarrow.fs as pafs
    from PIL import Image

    from orchestrator.config import parse_config
    from orchestrator.data.prepare import prepare

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    fs = pafs.S3FileSystem(access_key="k", secret_key="s", endpoint_override=s3_server, scheme="http",
                           region="us-east-1", allow_bucket_creation=True)
    fs.create_dir("imgs")

    def put(i: int, size: int) -> None:
        blob = io.BytesIO()
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(blob, "PNG")
        with fs.open_output_stream(f"imgs/train/{i}.png") as f:
            f.write(blob.getvalue())

    for i in range(12):
        put(i, 12)
    query = f"endpoint_override={s3_server}&scheme=http&region=us-east-1"
    rows = "".join(f"s3://imgs/train/{i}.png?{query},{i % 3},{i % 2},{i}\n" for i in range(12))
    (tmp_path / "m.csv").write_text("image,left,right,sum\n" + rows)
    cfg = parse_config(experiment(tmp_path, str(tmp_path / "m.csv"), data={"image_size": [12, 12]}))
    before = prepare(cfg).spec.fingerprint
    assert prepare(cfg).spec.fingerprint == before          # nothing changed: the same data
    put(5, 13)                                          # one image rewritten in place (another size)
    assert prepare(cfg).spec.fingerprint != before


def test_a_uri_pyarrow_cannot_parse_is_one_line_without_its_secret(tmp_path, capsys):
    """A raw space in an s3:// path with credentials: pyarrow's ArrowInvalid quoted the whole URI, secret included,
    in a traceback. It is now a one-line error naming the redacted location."""
    from orchestrator import storage
    from orchestrator.errors import UserError

    uri = "s3://AKIDLEAK:wJalrLEAKSECRET@bucket/team data/train.csv?endpoint_override=127.0.0.1:1&scheme=http"
    with pytest.raises(UserError) as e:
        storage.filesystem(uri)
    assert "LEAKSECRET" not in str(e.value) and "AKIDLEAK" not in str(e.value) and "team data" in str(e.value)
    code, out, err = run_cli(capsys, "validate", write_yaml(tmp_path / "e.yaml", experiment(tmp_path, uri)))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "s3://bucket/team data/train.csv" in err, err
    assert "LEAKSECRET" not in out + err and "AKIDLEAK" not in out + err
    from orchestrator.errors import DataError

    with pytest.raises(DataError, match="row 7 of m.csv cannot be read .*drop the row") as e:   # an image on a worker
        storage.read_bytes_or_fail(uri, where="row 7 of m.csv")
    assert "LEAKSECRET" not in str(e.value)


def test_one_line_errors_are_redacted_before_they_are_cut():
    """Cutting first left a URI whose '@' fell past the limit: its key and the start of its secret survived, since
    redaction needs the '@' to see credentials."""
    from orchestrator import storage
    from orchestrator.training.failures import one_line

    uri = "s3://AKIDLEAKEXAMPLE:wJalrLEAKSECRETKEYxyz@bucket/some/long/key.parquet"
    for limit in range(20, 90):
        shown = storage.first_line(OSError(f"cannot open {uri}"), limit)
        assert "AKIDLEAK" not in shown and "wJal" not in shown and len(shown) <= limit, (limit, shown)
    text = one_line(RuntimeError("x" * 260 + f" {uri}"))
    assert "AKIDLEAK" not in text and "wJal" not in text and len(text) <= 300, text


def test_credentials_in_manifest_image_uris_stay_out_of_the_units(s3_server, tmp_path):
    """A manifest listing s3://KEY:SECRET@bucket/... images: the units (put in Ray's object store, handed to Ray Data
    tasks and to every worker) held the URIs as written. The pair is kept in memory, per folder, as a config's URIs
    are; the units hold the URIs without it, and the images still decode."""
    import io
    import pickle

    import numpy as np
    import pyarrow.fs as pafs
    from PIL import Image

    from orchestrator import credentials
    from orchestrator.config import parse_config
    from orchestrator.data.pipeline import load_arrays
    from orchestrator.data.prepare import prepare

    fs = pafs.S3FileSystem(access_key=KEY, secret_key=SECRET, endpoint_override=s3_server, scheme="http",
                           region="us-east-1", allow_bucket_creation=True)
    fs.create_dir("secret-imgs")
    for i in range(12):
        blob = io.BytesIO()
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(blob, "PNG")
        with fs.open_output_stream(f"secret-imgs/train/{i}.png") as f:
            f.write(blob.getvalue())
    query = f"endpoint_override={s3_server}&scheme=http&region=us-east-1"
    rows = "".join(f"s3://{KEY}:{quote(SECRET, safe='')}@secret-imgs/train/{i}.png?{query},{i % 3},{i % 2},{i}\n"
                   for i in range(12))
    (tmp_path / "m.csv").write_text("image,left,right,sum\n" + rows)
    cfg = parse_config(experiment(tmp_path, str(tmp_path / "m.csv"), data={"image_size": [12, 12]}))
    try:
        data = prepare(cfg)
        shipped = pickle.dumps((data.train_units, data.val_units))
        assert SECRET.encode() not in shipped and quote(SECRET, safe="").encode() not in shipped
        assert KEY.encode() not in shipped
        (x, _), (xv, _), _ = load_arrays(cfg)
        assert x.shape == (9, 12, 12, 3) and xv.shape == (3, 12, 12, 3)
    finally:
        credentials.forget()


def test_without_an_address_a_ray_of_our_own_starts_not_one_ray_start_left_running(monkeypatch):
    """ray.init() without an address joins the cluster `ray start` left on the machine (Ray's ray_current_cluster
    file), or RAY_ADDRESS's: `orchestrator tune` ran its trials on whoever's Ray that was, and told that cluster's
    Train runs to go without their preemption watcher (meant for one machine). Without --address or RAY_ADDRESS the
    CLI starts a Ray of its own (address "local"); in a Ray job (RAY_ADDRESS) it joins the job's cluster, the
    watcher on. ray.init is replaced here (a real `ray start` cluster beside the tests' would take minutes): the test
    checks what init_ray asks of it. Found by a helper's audit."""
    import ray

    from orchestrator import credentials
    from orchestrator.training import session

    asked = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: asked.append(kw))
    monkeypatch.setattr(credentials, "publish", lambda: None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", raising=False)
    session.init_ray(num_gpus=1)
    assert asked[-1]["address"] == "local" and asked[-1]["num_gpus"] == 1
    assert os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER") == "0"
    monkeypatch.delenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")                     # a Ray job's driver
    session.init_ray()
    assert asked[-1]["address"] is None and "num_gpus" not in asked[-1]
    assert "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER" not in os.environ


def test_a_failed_runs_reason_holds_no_credentials_whatever_raised_it(no_ray):
    """A run's reason (its row, summary.json, Tune's error.txt) is ``failures.one_line``: a user error's text went
    there as raised, so every raise site in worker code had to redact its URIs itself (a helper's audit)."""
    from orchestrator.errors import DataError
    from orchestrator.training.failures import one_line

    reason = one_line(DataError(f"cannot read s3://{KEY}:{SECRET}@bucket/train.parquet: no such key"))
    assert reason == "cannot read s3://bucket/train.parquet: no such key"
