"""The statement guard's watchdog in a forked child.

A process that forks after its first statement (a pre-forking server, the fork-context workers
of the concurrency tests) copies the watchdog's lock as it is at that moment. Its watchdog
thread takes that lock ten times a second, so now and then the lock is copied held, and no
thread of the child would ever release it. The child's first statement then waits for ever.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from gridgov.store import statement_guard


def test_a_child_forked_while_the_watchdogs_lock_is_held_still_runs_statements() -> None:
    watchdog = statement_guard._WATCHDOG
    held, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:  # as the watchdog thread does on each tick
        with watchdog._lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    assert held.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: arm and disarm as every guarded statement does, then leave
        code = 1
        try:
            token = watchdog.arm(-1, 60.0)  # a deadline a minute away: nothing is cut
            watchdog.disarm(token)
            code = 0
        finally:
            os._exit(code)
    release.set()
    holder.join()
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child waited for a lock that no thread of it holds")
        time.sleep(0.05)
    assert os.WIFEXITED(status), status
    assert os.WEXITSTATUS(status) == 0
