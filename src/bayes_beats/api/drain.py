"""Graceful shutdown of a composed BentoML service: a dependency's worker keeps serving until its callers
are gone.

BentoML's arbiter (circus) SIGTERMs all workers at once; uvicorn would close the renderer's socket while
the API still has requests on their way to it (they would fail). Instead the renderer keeps serving, and
passes SIGTERM on to uvicorn (which then drains its own connections) once the sibling workers of other
services (the API) have exited, i.e. have answered all they had, or after a timeout."""

from __future__ import annotations

import logging
import signal
import threading
import time

import psutil

log = logging.getLogger("bentoml.bayes_beats")  # under BentoML's server logging


def _other_service_workers(me: psutil.Process, service_name: str) -> list[psutil.Process]:
    """The sibling worker processes (same arbiter) that serve a service other than `service_name`."""
    try:
        parent = me.parent()
        siblings = parent.children() if parent is not None and parent.pid != 1 else []
    except psutil.Error:
        return []
    found = []
    for proc in siblings:
        try:
            cmd = proc.cmdline()
        except psutil.Error:
            continue
        if "--service-name" in cmd[:-1] and cmd[cmd.index("--service-name") + 1] != service_name:
            found.append(proc)
    return found


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def defer_sigterm_until_callers_gone(service_name: str, timeout_s: float) -> None:
    """In a worker of `service_name`: hold uvicorn's SIGTERM until no worker of another service is left
    (at most `timeout_s`). SIGINT (Ctrl+C) is left alone; outside the main thread this does nothing."""
    uvicorn_exit = signal.getsignal(signal.SIGTERM)
    if not callable(uvicorn_exit) or threading.current_thread() is not threading.main_thread():
        return
    me = psutil.Process()

    def stop_when_the_callers_are_gone() -> None:
        started, waiting_for = time.monotonic(), _other_service_workers(me, service_name)
        log.info("SIGTERM: serving until %d API worker(s) have exited", len(waiting_for))
        while (waiting_for := [p for p in waiting_for if _alive(p)]) and time.monotonic() < started + timeout_s:
            time.sleep(0.1)
        log.info("the API is gone after %.1f s (%d left): stopping", time.monotonic() - started, len(waiting_for))
        uvicorn_exit(signal.SIGTERM, None)  # type: ignore[operator]

    draining = threading.Event()

    def on_sigterm(signum: int, frame: object) -> None:
        if not draining.is_set():  # a second SIGTERM (e.g. to the whole process group) changes nothing
            draining.set()
            threading.Thread(target=stop_when_the_callers_are_gone, name="drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
