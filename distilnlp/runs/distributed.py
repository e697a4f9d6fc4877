"""A clean exit for multi-process CPU runs (`accelerate launch --multi_gpu` on gloo).

Why a script that calls `DistillationTrainer.train()` under `accelerate launch` sometimes died at exit with
"terminate called without an active exception" (SIGABRT): gloo runs every collective on its own worker threads
(`pt_gloo_runloop`). A worker marks the work done, and only *later* drops its reference to the work's tensors.
When Python code made those tensors (the Trainer gathers losses and FLOPs at the end of `train()`), dropping the
last reference frees a Python object, which needs the GIL. If the script returns right after `train()`, the
interpreter may already be finalizing when a descheduled worker gets there (likelier on busy cores): the
thread is then made to exit inside a `noexcept` frame, and the C++ runtime calls `std::terminate`.
`destroy_process_group()` does not help: the model wrapper still holds the group, so its threads live on.

The cure: before the interpreter finalizes (an `atexit` hook, registered once per process), sleep with the GIL
released until every gloo worker thread is asleep, so the workers finish their last release while Python is
whole. It waits only as long as a worker is runnable (a few milliseconds), at most `timeout` seconds.
"""

from __future__ import annotations

import atexit
import os
import time

import torch.distributed as dist

_GLOO_WORKER = "pt_gloo_runloop"
_registered = False


def _gloo_worker_states() -> list[str]:
    """Scheduler state ('R' running, 'S' sleeping, ...) of each gloo worker thread of this process."""
    states = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:  # not Linux: nothing to inspect
        return states
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue  # the thread ended meanwhile
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        if name == _GLOO_WORKER:
            states.append(rest.split()[0])
    return states


def wait_for_gloo_workers(timeout: float = 5.0, quiet_polls: int = 3, interval: float = 0.01) -> bool:
    """Sleep until every gloo worker has been asleep for `quiet_polls` polls in a row; False on timeout."""
    deadline, quiet = time.monotonic() + timeout, 0
    while quiet < quiet_polls:
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)  # releases the GIL: a worker waiting for it can finish its release now
        quiet = quiet + 1 if all(state == "S" for state in _gloo_worker_states()) else 0
    return True


def settle_gloo_workers_at_exit() -> None:
    """Register `wait_for_gloo_workers` to run at interpreter exit when this process uses a gloo group."""
    global _registered
    if _registered or not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() != "gloo":
        return
    atexit.register(wait_for_gloo_workers)
    _registered = True
