"""What the user sees: TensorFlow loads without its start-up lines, and Ray logs go to a file.

TensorFlow 2.21 and absl write their start-up lines (oneDNN, CUDA probing, "All log messages before
absl::InitializeLog()") straight to file descriptor 2 before any Python logging setting applies, so
``TF_CPP_MIN_LOG_LEVEL`` alone cannot silence them. ``quiet_tensorflow`` imports TensorFlow and Keras
with descriptor 2 pointed at a log file, then restores it: errors stay one line.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings

_LOG_PATH = os.path.join(tempfile.gettempdir(), f"orchestrator-{os.getuid()}-tensorflow.log")


@contextlib.contextmanager
def stderr_to(path: str):
    """Point file descriptor 2 (C/C++ writers included) at ``path`` for the duration."""
    from .scratch import own_file

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        fd = own_file(path, append=True)
    except OSError:   # a link or another user's file at that name: the noise is dropped, not written through it
        fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def quiet_tensorflow(log_path: str | None = None):
    """Import TensorFlow (and Keras) once, its start-up noise sent to a log file; its loggers quiet at every call (the
    Python API puts them back after each: ``left_as_found``); returns the module."""
    if "tensorflow" in sys.modules and getattr(quiet_tensorflow, "done", False):
        tf = sys.modules["tensorflow"]
    else:
        tf = import_tensorflow_quietly(log_path)
        with _tensorflow_noise(log_path):
            tf.config.list_physical_devices("GPU")   # device probing logs now, not at the first op
        quiet_tensorflow.done = True
    tf.get_logger().setLevel("ERROR")
    logging.getLogger("absl").setLevel(logging.ERROR)
    return tf


def import_tensorflow_quietly(log_path: str | None = None):
    """Import TensorFlow and Keras, their start-up noise sent to a log file; no device is probed (a warm Train
    worker imports them before it is given its GPU: training/warm.py)."""
    with _tensorflow_noise(log_path), _hidden_from_keras(KERAS_EXTRAS):
        import tensorflow as tf
        import keras  # noqa: F401
    return tf


# Optional modules Keras imports whenever they are installed, for parts the product never uses: scikit-learn (with
# much of SciPy) for its scikit-learn wrappers, matplotlib's pyplot for its plotting utilities. Together about 1.3
# CPU-seconds of every Train worker's start on the 2-core machine (TensorFlow and Keras: 5.5-5.9 CPU-s with them,
# 4.2-4.6 without; 3 pairs).
KERAS_EXTRAS = ("sklearn", "matplotlib")


@contextlib.contextmanager
def _hidden_from_keras(modules: tuple[str, ...]):
    """``modules`` cannot be imported during the block, unless they were already: Keras then takes its own path for
    missing ones. They are importable again after it (the report's fANOVA needs scikit-learn, its plots matplotlib);
    in this process Keras's ``SKLearnClassifier`` and its ``plot_*`` utilities then say they are not installed."""
    hidden = [m for m in modules if m not in sys.modules] if "keras" not in sys.modules else []
    for module in hidden:
        sys.modules[module] = None   # ``import`` raises ModuleNotFoundError, an ImportError, which Keras catches
    try:
        yield
    finally:
        for module in hidden:
            if module in sys.modules and sys.modules[module] is None:
                del sys.modules[module]


@contextlib.contextmanager
def _tensorflow_noise(log_path: str | None):
    if not os.environ.get("TF_CPP_MIN_LOG_LEVEL"):
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    with stderr_to(log_path or _LOG_PATH), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def quiet_warnings() -> None:
    """Library deprecation/future warnings are for library authors, not for our users."""
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=".*__array__ implementation doesn't accept a copy.*")


def ray_env_quiet() -> None:
    """Before Ray Tune runs: the classic reporter (which honours verbose=0; the new one prints its
    boxes unconditionally), no migration warnings, no per-failure tracebacks (rows keep one line)."""
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")


def quiet_logs() -> None:
    """Per-epoch lines come from the driver; silence per-step chatter from Ray Data and Ray Train (workers and
    driver alike: Ray Data decodes on the driver's behalf too)."""
    from ray.data import DataContext

    from . import _ray

    DataContext.get_current().enable_progress_bars = False
    DataContext.get_current().print_on_execution_start = False
    for name in ("ray.data", "ray.train", "ray.train.v2", "ray.util"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _ray.quiet_train_reports()


def mute_ray_stderr() -> None:
    """Ray attaches its own stderr handler to the "ray" logger (again in ray.init): mute it, not the command log's."""
    for handler in logging.getLogger("ray").handlers:
        if not isinstance(handler, logging.FileHandler) and not isinstance(getattr(handler, "stream", None), _LogFile):
            handler.setLevel(logging.CRITICAL + 1)


def _quiet_libraries(log) -> None:
    """Without --verbose: library warnings and Ray's own console lines go away (Ray's to ``log``)."""
    from . import _ray

    mute_ray_stderr()
    quiet_warnings()
    try:
        from ray.util.annotations import RayDeprecationWarning

        warnings.filterwarnings("ignore", category=RayDeprecationWarning)
    except ImportError:
        pass
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:
        pass
    # Ray Data warns once per process that its progress bars are off, on its own console handler
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    # Raylet/GCS messages ("N worker processes have been started...") reach the driver through this
    # function whatever log_to_driver says: to the log file instead.
    _ray.set_stdstream_printer(lambda data, *_, **__: log and log.write(
        "".join(str(line) + "\n" for line in data.get("lines", []))))


class _LogFile:
    """A command's log file, made (with its folder) at its first line: a command stopped by a mistake in its input
    before it wrote any leaves no file, nor a folder in a storage that was a typo."""

    def __init__(self, path: str, *, announce: bool = False):
        self.path, self._f, self.announce = path, None, announce

    def write(self, text: str) -> int:
        if self._f is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._f = open(self.path, "a", buffering=1)
            if self.announce:   # where to follow the run, once there is something to follow
                print(f"full log: {self.path}", flush=True)
        return self._f.write(text)

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


@contextlib.contextmanager
def console(log_path: str | None, *, verbose: bool = False, announce: bool = False):
    """Our lines on stdout (and in the log file); Ray's and Tune's own output, and the ``orchestrator`` logger's
    records (the resolved config), only in the log file, unless ``verbose``. Yields ``out(line)``; ``out.detail(line)``
    is for the log only (unless ``verbose``). ``announce``: print the log's path when it is made."""
    import ray  # noqa: F401 - its logger must exist before we attach to it

    from . import _ray

    ray_env_quiet()
    log = _LogFile(log_path, announce=announce) if log_path else None
    handler = logging.StreamHandler(log) if log else None
    # Ray's own logs, and ours that belong in the file only (the resolved config): to the log file.
    loggers = [logging.getLogger("ray"), logging.getLogger("orchestrator")]
    if handler:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        loggers[1].setLevel(logging.INFO)
        for logger in loggers:
            logger.addHandler(handler)
    printer = _ray.stdstream_printer()
    if not verbose:
        _quiet_libraries(log)

    def out(line: str) -> None:
        if log:
            log.write(line + "\n")   # first: a new log's path is announced before its first line
        print(line, flush=True)

    def detail(line: str) -> None:
        """Lines for the log (per-epoch progress): on the console too with --verbose, or without a log."""
        if verbose or not log:
            out(line)
        else:
            log.write(line + "\n")

    out.detail = detail

    try:
        yield out
    finally:
        _ray.set_stdstream_printer(printer)
        if handler:
            for logger in loggers:
                logger.removeHandler(handler)
        if log:
            log.close()


# What a run sets for Ray Train, Tune and TensorFlow in its process (not what Ray or TensorFlow set for themselves: a
# Ray session's auth mode, TensorFlow's import); the Python API puts them back (``left_as_found``)
OWN_ENV_PREFIXES = ("RAY_TRAIN_", "TUNE_", "RAY_AIR_", "RAY_idle_worker_", "TF_CPP_MIN_LOG_LEVEL")
QUIETED_LOGGERS = ("ray", "ray.data", "ray.train", "ray.train.v2", "ray.util", "absl", "tensorflow", "optuna")


@contextlib.contextmanager
def left_as_found(*, searching: bool = False):
    """A Python API call leaves the caller's process as it found it: our settings in the environment
    (``OWN_ENV_PREFIXES``), the levels of the loggers a run quiets and of their handlers, Ray Data's progress bars.
    Inside, Tune's classic reporter (quiet at verbose 0; the new one printed its boxes), as the CLI has it, and for a
    sweep (``searching``) Optuna's logger at WARNING ("A new study created": the CLI's log file)."""
    from ray.data import DataContext

    if searching:
        import optuna

        optuna.logging.get_verbosity()   # Optuna sets its level at its first use: before ours is saved
    env = {k: v for k, v in os.environ.items() if k.startswith(OWN_ENV_PREFIXES)}
    loggers = [logging.getLogger(name) for name in QUIETED_LOGGERS]
    levels = {lg: (lg.level, [(h, h.level) for h in lg.handlers]) for lg in loggers}
    data = DataContext.get_current()
    flags = (data.enable_progress_bars, data.print_on_execution_start)
    ray_env_quiet()
    if searching:
        logging.getLogger("optuna").setLevel(logging.WARNING)
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith(OWN_ENV_PREFIXES)]:
            if key not in env:
                del os.environ[key]
        os.environ.update(env)
        for lg, (level, handlers) in levels.items():
            lg.setLevel(level)
            for handler, handler_level in handlers:
                handler.setLevel(handler_level)
        data.enable_progress_bars, data.print_on_execution_start = flags
