"""What reaches the console and what only the command's log file (console.console)."""
from __future__ import annotations

import logging


def test_rays_own_log_records_go_to_the_command_log_and_not_to_the_console(tmp_path, capfd):
    """Without --verbose, Ray's logger records (a Tune warning, a note of Train's) reached neither the console nor the
    full log the console points to: muting Ray's console handler muted the log file's handler too."""
    from orchestrator.console import console, mute_ray_stderr

    log = tmp_path / "logs" / "tune.log"
    with console(str(log)) as out:
        out("a line of ours")
        mute_ray_stderr()   # as again after ray.init, which attaches Ray's console handler once more
        logging.getLogger("ray.tune").warning("a warning of Tune's")
    assert "a warning of Tune's" in log.read_text() and "a line of ours" in log.read_text()
    shown = capfd.readouterr()
    assert "a line of ours" in shown.out and "a warning of Tune's" not in shown.out + shown.err, shown


def test_shortened_cuts_to_its_width_and_can_keep_the_end():
    """One helper cuts long user text in messages (a --where expression, a job's entrypoint, a YAML source's name)."""
    from orchestrator.errors import shortened

    assert shortened("abc", 3) == "abc"
    assert shortened("abcdefgh", 6) == "abc..." and len(shortened("x" * 500, 80)) == 80
    name = "/data/" + "d" * 200 + "/experiment.yaml"
    cut = shortened(name, 120, tail=40)
    assert len(cut) == 120 and cut.endswith(name[-40:]) and cut.startswith(name[:77]) and "..." in cut


def test_tensorflows_loggers_are_quiet_at_every_call_not_only_the_first():
    """The Python API puts the loggers it quiets back after each call (console.left_as_found); TensorFlow's and absl's
    were quieted only when TensorFlow was first imported, so a notebook's second train() ran with them loud (this
    session's review)."""
    import logging

    from orchestrator.console import quiet_tensorflow

    quiet_tensorflow()
    logging.getLogger("absl").setLevel(logging.NOTSET)   # as left_as_found puts them back
    logging.getLogger("tensorflow").setLevel(logging.NOTSET)
    quiet_tensorflow()
    assert logging.getLogger("absl").level == logging.getLogger("tensorflow").level == logging.ERROR
