"""Graceful shutdown of a composed BentoML service: a dependency keeps serving until its callers are done.

BentoML's arbiter (circus) SIGTERMs all workers at once; uvicorn would close the renderer's socket while
the API still has requests on their way to it (they would fail). BentoML 1.4 has no shutdown order for
dependencies, so the services say it themselves, through BentoML's lifecycle hooks:

- each caller worker (the API) registers in `on_startup` (`register_caller`: a file named after its pid,
  in a folder of this `bentoml serve`, i.e. of the arbiter every worker has as its parent) and leaves in
  `on_shutdown` (`caller_done`), which BentoML runs once uvicorn has answered everything the worker held;
- the renderer's workers, on SIGTERM, keep serving until no live caller is registered, or the timeout,
  then hand SIGTERM to uvicorn, which drains its own connections (`defer_sigterm_until_callers_gone`).

A caller that dies without its shutdown hook is not waited for: its pid is gone."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger("bentoml.bayes_beats")  # under BentoML's server logging


def callers_dir() -> Path:
    """The folder the workers of this server share (one arbiter: one parent pid)."""
    return Path(tempfile.gettempdir()) / f"bayes-beats-callers-{os.getppid()}"


def register_caller() -> None:
    folder = callers_dir()
    folder.mkdir(exist_ok=True)
    (folder / str(os.getpid())).touch()


def caller_done() -> None:
    folder = callers_dir()
    (folder / str(os.getpid())).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # the last one out
        folder.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_callers(folder: Path) -> list[int]:
    pids = [int(p.name) for p in folder.glob("*") if p.name.isdigit()] if folder.is_dir() else []
    return [pid for pid in pids if _alive(pid)]


def defer_sigterm_until_callers_gone(timeout_s: float) -> None:
    """In a dependency's worker: hold uvicorn's SIGTERM until no registered caller is left (at most
    `timeout_s`). SIGINT (Ctrl+C) is left alone; outside the main thread this does nothing."""
    uvicorn_exit = signal.getsignal(signal.SIGTERM)
    if not callable(uvicorn_exit) or threading.current_thread() is not threading.main_thread():
        return
    folder = callers_dir()

    def stop_when_the_callers_are_gone() -> None:
        started = time.monotonic()
        log.info("SIGTERM: serving until %d API worker(s) are done", len(live_callers(folder)))
        while (left := live_callers(folder)) and time.monotonic() < started + timeout_s:
            time.sleep(0.1)
        log.info("the API is done after %.1f s (%d left): stopping", time.monotonic() - started, len(left))
        uvicorn_exit(signal.SIGTERM, None)  # type: ignore[operator]

    draining = threading.Event()

    def on_sigterm(signum: int, frame: object) -> None:
        if not draining.is_set():  # a second SIGTERM (e.g. to the whole process group) changes nothing
            draining.set()
            threading.Thread(target=stop_when_the_callers_are_gone, name="drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)


def before_sigterm(callback) -> None:
    """In a worker: on SIGTERM run `callback` (it must only schedule work), then uvicorn's own handler.
    Open streams never finish on their own, and uvicorn waits for open responses: the streams hear first."""
    uvicorn_exit = signal.getsignal(signal.SIGTERM)
    if not callable(uvicorn_exit) or threading.current_thread() is not threading.main_thread():
        return

    def on_sigterm(signum: int, frame: object) -> None:
        callback()
        uvicorn_exit(signum, frame)  # type: ignore[operator,arg-type]

    signal.signal(signal.SIGTERM, on_sigterm)
