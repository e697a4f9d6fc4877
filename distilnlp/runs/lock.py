"""One run per output folder: a lock file that names the process holding it.

Two runs writing one `output_dir` at once end with one run's weights next to the other's results and card.
`output_dir_lock` creates `_distilnlp.lock` exclusively (`O_CREAT | O_EXCL`); a second run refuses with the
first one's PID. A lock whose process is gone (killed, crashed) is taken over. Under `accelerate launch` only
the main process (RANK 0) takes it: the other ranks belong to the same run.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from .artifacts import RUN_LOCK_FILE

logger = logging.getLogger(__name__)


class OutputDirLockedError(OSError):
    """Another live run holds the output folder (an OSError, like a busy resource)."""


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _alive(record: dict) -> bool:
    """Whether the process that wrote `record` still runs (same PID *and* start time: PIDs get reused)."""
    if record.get("host") != socket.gethostname():
        return True  # cannot tell from here: assume it runs
    try:
        process = psutil.Process(int(record["pid"]))
        return abs(process.create_time() - float(record.get("started", 0))) < 1.0
    except (psutil.NoSuchProcess, KeyError, ValueError, TypeError):
        return False


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def acquire(output_dir: str | os.PathLike) -> Path:
    """Create the lock in `output_dir` or raise `OutputDirLockedError` naming the live holder."""
    path = Path(output_dir) / RUN_LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": psutil.Process().create_time(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(path)
            if not holder:  # being written right now, or a torn file: look again shortly
                time.sleep(0.2)
                holder = _read(path)
            if holder and _alive(holder):
                raise OutputDirLockedError(
                    f"{output_dir} is in use by another run (PID {holder.get('pid')} on {holder.get('host')}, "
                    f"since {holder.get('since')}). Wait for it, choose another output_dir, or delete {path} if "
                    "that process is gone."
                ) from None
            # Stale: move it aside first; only one taker's rename succeeds, the others retry the create.
            try:
                os.rename(path, path.with_name(f"{path.name}.stale-{os.getpid()}"))
                path.with_name(f"{path.name}.stale-{os.getpid()}").unlink()
                logger.warning(
                    "Taking over the lock of %s from PID %s, which is gone.", output_dir, holder.get("pid")
                )
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        return path
    raise OutputDirLockedError(f"Could not lock {output_dir}: another run keeps taking it. Try again.")


def release(path: Path) -> None:
    if _read(path).get("pid") == os.getpid():
        path.unlink(missing_ok=True)


@contextmanager
def output_dir_lock(output_dir: str | os.PathLike) -> Iterator[Path | None]:
    """Hold the lock of `output_dir` for the block (main process only; other ranks get None)."""
    if not _is_main_process():
        yield None
        return
    path = acquire(output_dir)
    try:
        yield path
    finally:
        release(path)
