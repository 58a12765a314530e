"""orchestrator.cli.jobs without a cluster: local checks, unreachable or refusing endpoints, a fake client.

Servers here are stdlib HTTP servers on 127.0.0.1 that answer like a Ray dashboard with token auth
on (401/403) or like something that is not a dashboard (404). Nothing starts Ray.
"""
from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.cli import jobs
from orchestrator.errors import ConfigError, UserError

from factories import free_port, free_ports, run_cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path):
    """A minimal project directory: jobs/tune.py, a .gitignore, an experiment config."""
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "tune.py").write_text("print('hi')\n")
    (tmp_path / ".gitignore").write_text("best.yaml\nruns/\n")
    import yaml

    from factories import experiment

    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({**experiment(tmp_path, "builtin:multidigits/train"),
                                                       "storage": "/shared/runs"}))
    return tmp_path


@pytest.fixture
def http_status():
    """Start a loopback HTTP server answering every request with one status; yields its URL."""
    servers = []

    def start(status: int, body: str, *, version_ok: bool = False) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                ok = version_ok and self.path == "/api/version"
                data = (json.dumps({"ray_version": "2.60.0"}) if ok else body).encode()
                self.send_response(200 if ok else status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# -- checks before any network call ---------------------------------------------------------------

def test_config_outside_working_dir(project, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "exp.yaml"
    outside.write_text("name: t\nstorage: /shared/runs\n")
    with pytest.raises(ConfigError, match="outside .*place it in the project directory"):
        jobs.submit_job(str(outside), "http://127.0.0.1:1", working_dir=str(project))


def test_config_ignored_by_gitignore(project):
    (project / "best.yaml").write_text("name: t\nstorage: /shared/runs\n")
    (project / "runs").mkdir()
    (project / "runs" / "exp.yaml").write_text("name: t\nstorage: /shared/runs\n")
    for path in ("best.yaml", "runs/exp.yaml"):
        with pytest.raises(ConfigError, match="left out of the upload"):
            jobs.submit_job(str(project / path), "http://127.0.0.1:1", working_dir=str(project))


def test_missing_config_and_entrypoint(project):
    with pytest.raises(ConfigError, match="not found"):
        jobs.submit_job(str(project / "nope.yaml"), "http://127.0.0.1:1", working_dir=str(project))
    with pytest.raises(ConfigError, match="jobs/train.py not found"):
        jobs.submit_job(str(project / "exp.yaml"), "http://127.0.0.1:1", working_dir=str(project),
                    entrypoint_script="jobs/train.py")


def test_excluded_mirrors_ray_upload_rules(project):
    assert not jobs._excluded(project, "exp.yaml")
    assert jobs._excluded(project, "best.yaml")
    assert jobs._excluded(project, ".venv/x.yaml")


# -- cluster not reachable, or refusing ---------------------------------------------------------

def test_unreachable_address_fails_fast(project):
    url = f"http://127.0.0.1:{free_port()}"
    calls = [
        lambda: jobs.submit_job(str(project / "exp.yaml"), url, working_dir=str(project)),
        lambda: jobs.status(url),
        lambda: jobs.status(url, "raysubmit_x"),
        lambda: jobs.logs(url, "raysubmit_x", follow=True),
    ]
    for call in calls:
        start = time.monotonic()
        with pytest.raises(jobs.ClusterError, match=f"cannot reach Ray dashboard at {url}: .*ray dashboard cluster.yaml"):
            call()
        # no retry loop: an unreachable dashboard is reported at once (a bound far above a refused connect's
        # milliseconds, so a busy machine under pytest-xdist does not fail it)
        assert time.monotonic() - start < 10.0


def test_cluster_error_is_a_user_error():
    assert issubclass(jobs.ClusterError, UserError) and issubclass(jobs.ClusterAuthError, jobs.ClusterError)


@pytest.mark.parametrize("address", ["ray://127.0.0.1:10001", "http://", "http://host:notaport"])
def test_invalid_address(address):
    with pytest.raises(jobs.ClusterError, match="invalid Ray dashboard address"):
        jobs.status(address)


def test_missing_token_401(http_status, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    url = http_status(401, "Unauthorized: Missing authentication token")
    with pytest.raises(jobs.ClusterAuthError, match="requires a token: export RAY_AUTH_MODE=token"):
        jobs.status(url)


def test_wrong_token_403(http_status):
    url = http_status(403, "Forbidden: Invalid authentication token")
    with pytest.raises(jobs.ClusterAuthError, match="rejected the auth token"):
        jobs.status(url)


def test_not_a_dashboard_404(http_status):
    url = http_status(404, "not here")
    with pytest.raises(jobs.ClusterError, match="not a Ray dashboard"):
        jobs.status(url)


def test_unknown_job_404(http_status, monkeypatch):
    url = http_status(404, "Job raysubmit_x does not exist", version_ok=True)
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:1")  # Ray would let it override the address
    for call in (lambda: jobs.status(url, "raysubmit_x"), lambda: jobs.logs(url, "raysubmit_x"),
                 lambda: jobs.logs(url, "raysubmit_x", follow=True)):  # the last one: websocket
        with pytest.raises(jobs.ClusterError, match=f"no job 'raysubmit_x' on the cluster at {url}"):
            call()
    assert os.environ["RAY_ADDRESS"] == "http://127.0.0.1:1"


def test_token_mode_without_token(tmp_path):
    """RAY_AUTH_MODE=token but the token file is missing: Ray raises before any request.

    In a subprocess: Ray caches the auth mode per process."""
    with socket.socket() as listener:  # something listening, so the reachability probe passes
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")}
        env.pop("RAY_AUTH_TOKEN", None)
        code = ("from orchestrator.cli import jobs\n"
                "try:\n"
                f"    jobs.status('http://127.0.0.1:{listener.getsockname()[1]}')\n"
                "except jobs.ClusterAuthError as e:\n"
                "    print(e)\n")
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)
    assert done.stdout.startswith("no Ray auth token: RAY_AUTH_TOKEN_PATH is set but file cannot be opened"), (
        done.stdout + done.stderr)
    assert len(done.stdout.strip().splitlines()) == 1


# -- the flow, with a fake client ---------------------------------------------------------------

class FakeClient:
    def __init__(self, statuses, logs="line 1\nline 2\n"):
        from ray.job_submission import JobStatus

        self.statuses = [JobStatus(s) for s in statuses]
        self.log_text = logs
        self.submitted = None

    def submit_job(self, **kwargs):
        self.submitted = kwargs
        return "raysubmit_fake"

    def get_job_info(self, job_id):
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return SimpleNamespace(status=status, message="boom" if status == "FAILED" else None,
                               entrypoint="python jobs/tune.py exp.yaml")

    def get_job_logs(self, job_id):
        return self.log_text

    async def tail_job_logs(self, job_id):
        for line in self.log_text.splitlines(keepends=True):
            yield line


def run_submit(monkeypatch, project, client, **kwargs):
    monkeypatch.setattr(jobs, "_client", lambda url: client)
    monkeypatch.setattr(jobs, "POLL_S", 0)
    lines = []
    code = jobs.submit_job(str(project / "exp.yaml"), "127.0.0.1:8265", working_dir=str(project),
                       out=lines.append, **kwargs)
    return code, lines


def test_submit_request_and_wait(monkeypatch, project):
    client = FakeClient(["PENDING", "RUNNING", "SUCCEEDED"])
    code, lines = run_submit(monkeypatch, project, client, extra_args=["--set", "train.epochs=2"])
    assert code == 0
    assert client.submitted == {
        "entrypoint": "python jobs/tune.py exp.yaml --entrypoint-cpus 0.1 --set train.epochs=2",
        "entrypoint_num_cpus": 0.1,
        # any entrypoint resource drops Ray's pin of the driver to the head node: asked for again (a helper's audit)
        "entrypoint_resources": {"node:__internal_head__": 0.001},
        "runtime_env": {"working_dir": str(project), "excludes": jobs.EXCLUDES},
    }
    assert lines == ["submitted job raysubmit_fake to http://127.0.0.1:8265: "
                     "python jobs/tune.py exp.yaml --entrypoint-cpus 0.1 --set train.epochs=2",
                     "job raysubmit_fake: PENDING", "job raysubmit_fake: RUNNING",
                     "job raysubmit_fake SUCCEEDED"]


def test_submit_failed_job_shows_log_tail(monkeypatch, project):
    code, lines = run_submit(monkeypatch, project, FakeClient(["RUNNING", "FAILED"]))
    assert code == 1
    assert lines[-2:] == ["line 1\nline 2", "job raysubmit_fake FAILED: boom"]


def test_submit_follow_streams_logs(monkeypatch, project):
    code, lines = run_submit(monkeypatch, project, FakeClient(["SUCCEEDED"]), follow=True)
    assert code == 0
    assert lines[1:] == ["line 1", "line 2", "job raysubmit_fake SUCCEEDED"]


def test_the_commands_printed_after_ctrl_c_name_the_cluster(monkeypatch, project):
    """After Ctrl-C the hints read `ray job stop ID` and `ray job logs --follow ID`: pasted on the laptop, both failed
    ("Could not find any running Ray instance") without the dashboard's address (a helper's audit)."""
    class Interrupted(FakeClient):
        def get_job_info(self, job_id):
            raise KeyboardInterrupt

        async def tail_job_logs(self, job_id):
            raise KeyboardInterrupt
            yield ""

    for follow, hint in ((False, "ray job logs --follow raysubmit_fake --address http://127.0.0.1:8265"),
                         (True, "ray job stop raysubmit_fake --address http://127.0.0.1:8265")):
        code, lines = run_submit(monkeypatch, project, Interrupted(["RUNNING"]), follow=follow)
        assert code == 130 and hint in lines[-1], lines


def test_submit_no_wait(monkeypatch, project):
    code, lines = run_submit(monkeypatch, project, FakeClient(["PENDING"]), wait=False)
    assert code == 0 and len(lines) == 1


def test_the_ports_a_test_gives_one_ray_node_are_distinct():
    # Ray refuses to start when two of its components get one port (CI: client_server and metrics_export both got
    # 49833 from two free_port() calls: the kernel may hand a just-closed port out again).
    for _ in range(2000):
        ports = free_ports(12)
        assert len(set(ports)) == 12, sorted(ports)


def test_a_config_holding_credentials_is_not_uploaded(monkeypatch, project):
    """The working directory goes to the cluster's GCS and onto every node: a config with s3://KEY:SECRET@... in it
    would carry the secret there (credentials.py keeps secrets out of everything Ray stores)."""
    (project / "exp.yaml").write_text("name: t\nstorage: s3://AKIDX:se/cr+et@bucket/runs\n"
                                      "data: {train: s3://bucket/train.parquet}\n")
    client = FakeClient(["SUCCEEDED"])
    with pytest.raises(ConfigError) as e:
        run_submit(monkeypatch, project, client)
    assert client.submitted is None and "cr+et" not in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith("exp.yaml holds credentials (storage: s3://bucket/runs): "), str(e.value)


def test_another_uploaded_config_holding_credentials_is_not_uploaded_either(monkeypatch, project):
    """Only the submitted config was checked, but the whole working directory is uploaded: examples/minio.yaml with
    s3://KEY:SECRET@... went to the cluster's GCS and every node. Every uploaded YAML file is checked; one that the
    upload leaves out (.gitignore) is not."""
    (project / "examples").mkdir()
    (project / "examples" / "minio.yml").write_text("# ours\nstorage: 's3://minio:p?ss@bucket/runs'\n")
    (project / "best.yaml").write_text("storage: s3://AKIDX:se/cr+et@bucket/runs\n")   # .gitignore'd: not uploaded
    client = FakeClient(["SUCCEEDED"])
    with pytest.raises(ConfigError) as e:
        run_submit(monkeypatch, project, client)
    assert client.submitted is None and "p?ss" not in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith("examples/minio.yml holds credentials (storage: s3://bucket/runs): "), str(e.value)
    (project / "examples" / "minio.yml").write_text("storage: s3://bucket/runs\n")
    (project / "examples" / "chart.yaml").write_text("url: s3://k:sec@b/r\nbroken: [\n")   # not YAML: read as text
    with pytest.raises(ConfigError) as e:
        run_submit(monkeypatch, project, client)
    assert str(e.value).startswith("examples/chart.yaml holds credentials (s3://b/r): "), str(e.value)
    (project / "examples" / "chart.yaml").unlink()
    assert run_submit(monkeypatch, project, client)[0] == 0 and client.submitted is not None


def test_a_password_in_the_dashboard_address_is_not_printed(monkeypatch, project):
    url = "https://alice:T0KEN@127.0.0.1:8265"
    monkeypatch.setattr(jobs, "_client", lambda u: FakeClient(["FAILED"]))
    monkeypatch.setattr(jobs, "POLL_S", 0)
    lines = []
    jobs.submit_job(str(project / "exp.yaml"), url, working_dir=str(project), out=lines.append)
    assert lines and not any("T0KEN" in line for line in lines), lines
    assert lines[0].startswith("submitted job raysubmit_fake to https://127.0.0.1:8265: "), lines[0]
    monkeypatch.undo()   # the real client: an unreachable address
    with pytest.raises(jobs.ClusterError) as e:
        jobs.status(f"http://alice:T0KEN@127.0.0.1:{free_port()}")
    assert "T0KEN" not in str(e.value), str(e.value)


@pytest.mark.parametrize("argv, expected", [
    (["jobs", "raysubmit_x", "--address", "http://127.0.0.1:1", "--follow"], "--follow needs --logs"),
    (["submit", "exp.yaml", "--address", "http://127.0.0.1:1", "--follow", "--no-wait"],
     "--follow waits for the job to end: drop --no-wait"),
])
def test_flags_that_would_be_ignored_are_usage_errors(project, monkeypatch, capsys, argv, expected):
    from factories import run_cli

    monkeypatch.chdir(project)
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and expected in err, err


def test_local_logs_are_not_uploaded_with_a_job():
    assert "orchestrator-logs" in jobs.EXCLUDES


def test_a_proxy_error_is_one_line_without_the_password(http_status):
    """A proxy in front of the dashboard answering 502/503: requests' HTTPError (not a RuntimeError) went up as a
    traceback whose last line held the whole address, password included."""
    url = http_status(503, "Service Unavailable").replace("http://", "http://alice:T0KEN@")
    with pytest.raises(jobs.ClusterError) as e:
        jobs.status(url)
    assert "T0KEN" not in str(e.value) and "503" in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_credentials_on_the_submit_command_line_are_not_sent(monkeypatch, project):
    """`submit exp.yaml --set storage=s3://KEY:SECRET@...` put the secret into the job's entrypoint, which Ray stores
    in its job table and shows in the dashboard, and the submit line printed it."""
    client = FakeClient(["SUCCEEDED"])
    for extra in (["--set", "storage=s3://AKIDX:se/cr+et@bucket/runs"], ["--storage=s3://AKIDX:se/cr+et@bucket/runs"]):
        with pytest.raises(ConfigError) as e:
            run_submit(monkeypatch, project, client, extra_args=extra)
        assert client.submitted is None and "cr+et" not in str(e.value) and "AKIDX" not in str(e.value), str(e.value)
        assert "holds credentials" in str(e.value) and "\n" not in str(e.value)
    jobs.refuse_secret_args(["--set", "search.mlflow=sqlite:////tmp/x/mlflow.db", "--set",
                             "data.train=s3://b/t.parquet?endpoint_override=127.0.0.1:9000&scheme=http"])   # none here


def test_job_listings_show_entrypoints_without_credentials(monkeypatch):
    """Jobs on a shared cluster may have been started by other tools with credentials on their command line."""
    from ray.job_submission import JobStatus

    job = SimpleNamespace(submission_id="raysubmit_a", job_id=None, status=JobStatus("RUNNING"), start_time=None,
                          entrypoint="python other.py --out s3://AKIDX:se/cr+et@bucket/x", message=None)
    client = SimpleNamespace(list_jobs=lambda: [job], get_job_info=lambda job_id: job)
    monkeypatch.setattr(jobs, "_client", lambda url: client)
    for args in ((), ("raysubmit_a",)):
        lines = []
        jobs.status("http://127.0.0.1:8265", *args, out=lines.append)
        assert lines and not any("cr+et" in line or "AKIDX" in line for line in lines), lines


def test_submit_validates_the_config_before_it_reaches_for_the_cluster(project, capsys):
    """A config with an unknown key got as far as the cluster: it would have failed there, after the upload and the
    job's start. The config is validated here first (its data files may live on the cluster only: not checked)."""
    from factories import run_cli

    (project / "exp.yaml").write_text((project / "exp.yaml").read_text() + "trian: {epochs: 2}\n")
    code, _, err = run_cli(capsys, "submit", str(project / "exp.yaml"), "--address", f"http://127.0.0.1:{free_port()}",
                           "--working-dir", str(project))
    assert code == 2 and "\n" not in err and "trian" in err and "cannot reach" not in err, err


def test_submit_takes_set_overrides_validates_them_and_hands_them_to_the_job(project, monkeypatch, capsys):
    """README: every command that reads a config takes --set; submit did not."""
    from factories import run_cli

    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = run_cli(capsys, "submit", str(project / "exp.yaml"), "--address", url, "--working-dir",
                           str(project), "--set", "train.epoch=3")
    assert code == 2 and "\n" not in err and "train.epoch" in err and "cannot reach" not in err, err
    client = FakeClient(["SUCCEEDED"])
    monkeypatch.setattr(jobs, "_client", lambda u: client)
    code, out, err = run_cli(capsys, "submit", str(project / "exp.yaml"), "--address", url, "--working-dir",
                             str(project), "--set", "train.epochs=3", "--resume")
    assert code == 0 and client.submitted["entrypoint"] == ("python jobs/tune.py exp.yaml --entrypoint-cpus 0.1 --resume "
                                                          "--set train.epochs=3")


def test_a_relative_path_given_to_submit_by_set_names_the_same_file_on_the_cluster(project, monkeypatch, capsys):
    """A relative path in `--set` resolves against the shell's folder (README), but the job ran it in the uploaded
    working directory: from project/examples, `--set data.train=digits` meant examples/digits here and digits there.
    It is handed to the job relative to the upload; one outside the upload is refused."""
    from factories import run_cli

    (project / "examples").mkdir()
    monkeypatch.chdir(project / "examples")
    client = FakeClient(["SUCCEEDED"])
    monkeypatch.setattr(jobs, "_client", lambda u: client)
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = run_cli(capsys, "submit", str(project / "exp.yaml"), "--address", url, "--working-dir",
                           str(project), "--set", "data.train=digits/train", "--set", "train.epochs=3",
                           "--set", "storage=/shared/other")
    assert code == 0, err
    assert client.submitted["entrypoint"] == ("python jobs/tune.py exp.yaml --entrypoint-cpus 0.1 "
                                              "--set data.train=examples/digits/train "
                                              "--set train.epochs=3 --set storage=/shared/other")
    client.submitted = None
    code, _, err = run_cli(capsys, "submit", str(project / "exp.yaml"), "--address", url, "--working-dir",
                           str(project), "--set", "data.train=../../elsewhere")
    assert code == 2 and "\n" not in err.rstrip("\n") and "data.train" in err and "outside" in err, err
    code, _, err = run_cli(capsys, "submit", str(project / "exp.yaml"), "--address", url, "--working-dir",
                           str(project), "--set", "storage=../../runs")   # lost with the job's folder, wherever it is
    assert code == 2 and "is a relative local path" in err, err
    assert client.submitted is None


def test_an_uploaded_yaml_with_credentials_in_a_comment_is_refused(project, monkeypatch):
    """The uploaded folder's YAML files were searched by their values only: a commented-out line
    `# storage: s3://KEY:SECRET@bucket/runs` went to the cluster, which stores the upload and unpacks it on every
    node. Their text is searched too."""
    client = FakeClient(["SUCCEEDED"])
    (project / "examples").mkdir()
    (project / "examples" / "old.yaml").write_text("name: t\n# storage: s3://AKIAOLD:wJalrOLDSECRET@team/runs\n")
    with pytest.raises(ConfigError, match="examples/old.yaml holds credentials") as e:
        run_submit(monkeypatch, project, client)
    assert "wJalrOLDSECRET" not in str(e.value) and client.submitted is None


def test_an_uploaded_yaml_behind_a_linked_folder_is_searched_too(project, monkeypatch, tmp_path_factory):
    """submit searched the uploaded folder with os.walk, which does not enter linked folders; Ray's upload does (its
    walk follows them): a YAML with credentials in a linked folder went to the cluster. Found by a helper's audit."""
    client = FakeClient(["SUCCEEDED"])
    elsewhere = tmp_path_factory.mktemp("elsewhere")   # outside the uploaded folder
    (elsewhere / "minio.yaml").write_text("storage: s3://AKIDX:se/cr+et@bucket/runs\n")
    (project / "examples").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ConfigError, match="examples/minio.yaml holds credentials") as e:
        run_submit(monkeypatch, project, client)
    assert "se/cr+et" not in str(e.value) and client.submitted is None


def test_a_dashboard_reached_through_an_http_proxy_is_not_refused(monkeypatch):
    """submit and jobs opened a direct connection to the dashboard before Ray's client, which goes through
    http(s)_proxy: a dashboard reachable only through the proxy was refused as unreachable. Found by a helper's
    audit."""
    import ray.job_submission

    made = []
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", lambda url: made.append(url) or "client")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")          # the proxy, as the client will use it
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert jobs._client("http://ray-head.internal.example:8265") == "client"
    assert made == ["http://ray-head.internal.example:8265"]


def test_a_job_counts_the_cpus_its_entrypoint_holds_as_it_was_submitted(tmp_path, monkeypatch, capsys):
    """A job's driver counted 0.1 CPU held by its entrypoint (what submit asks for), but plain `ray job submit`
    (as the README shows) holds none: a run that fits the cluster exactly was refused as too big. The CPUs come with
    the command: submit passes them; without, none. Found by a helper's audit."""
    from factories import experiment, run_cli, write_yaml
    from orchestrator.sweep import capacity
    from orchestrator.training import driver

    held = []
    monkeypatch.setattr(capacity, "check_fits", lambda cfg, *, reserved_cpu, what: held.append(reserved_cpu))

    def fake_train(cfg, *, ready, **kw):
        ready(cfg)
        return {"user_error": True, "error": "stopped here"}

    monkeypatch.setattr(driver, "train", fake_train)
    path = write_yaml(tmp_path / "e.yaml", experiment(tmp_path, "builtin:multidigits/train"))
    run_cli(capsys, "train", "--in-ray-job", path)
    run_cli(capsys, "train", "--in-ray-job", "--entrypoint-cpus", "0.1", path)
    assert held == [0.0, 0.1]


def test_a_failed_jobs_message_is_one_line_without_a_secret(monkeypatch, project):
    """Ray 2.60's JobInfo.message of a failed job holds up to 20,000 characters of its logs: printed after the last 20
    log lines, whole and unredacted. Its first meaningful line, redacted. Found by a helper's audit."""
    client = FakeClient(["RUNNING", "FAILED"])
    long_message = ("Job entrypoint command failed with exit code 1, last available logs (truncated to 20,000 chars):\n"
                    + "noise\n" * 3000 + "storage s3://AKIAX:s3cr3t@bucket/runs failed\n")
    monkeypatch.setattr(client, "get_job_info", lambda job_id: SimpleNamespace(
        status=client.statuses.pop(0) if len(client.statuses) > 1 else client.statuses[0], message=long_message,
        entrypoint="python jobs/tune.py exp.yaml"))
    code, lines = run_submit(monkeypatch, project, client)
    assert code == 1 and "\n" not in lines[-1] and len(lines[-1]) < 300 and "s3cr3t" not in lines[-1], lines[-1][:400]
    assert lines[-1].startswith("job raysubmit_fake FAILED: Job entrypoint command failed with exit code 1")


def test_a_config_file_a_job_cannot_find_is_named_as_missing(tmp_path, capsys, no_ray):
    """`python jobs/tune.py nope.yaml` said "storage 'runs' is a relative local path ...": the job's check of its
    storage read the default of a file that is not there. The file is named as missing, as outside a job (a helper's
    audit)."""
    for sets in ((), ("--set", "storage=runs")):
        r = run_cli(capsys, "tune", "--in-ray-job", str(tmp_path / "nope.yaml"), *sets)
        assert r.code == 2 and "nope.yaml" in r.err and "relative local path" not in r.err, (sets, r.err)
