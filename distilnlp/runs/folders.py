"""Replace a folder by another in one step, so a crash never leaves the target missing or half-written.

On Linux the two folders swap names atomically (`renameat2` with `RENAME_EXCHANGE`), and the old contents,
now under the staging name, are deleted. Where that call is missing or the filesystem refuses it, the old
folder is renamed aside, the new one renamed into place, and only then is the old one deleted: a failure
in between puts the old folder back.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
from pathlib import Path

_AT_FDCWD = -100  # paths relative to the working directory (<fcntl.h>)
_RENAME_EXCHANGE = 2  # <linux/fs.h>
# What renameat2 answers where it cannot exchange: no such call, or a filesystem without the flag.
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}


def _exchange(first: Path, second: Path) -> bool:
    """Swap the names of two existing paths atomically; False where this system cannot (then nothing moved)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # a C library without the wrapper (glibc < 2.28)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    result = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def _swap_by_renames(staging: Path, target: Path) -> Path:
    """Move `target` aside and `staging` into its place; the aside folder (the old contents) is returned.

    A failure of the second rename moves the old folder back before raising."""
    aside = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(aside, ignore_errors=True)
    os.rename(target, aside)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(aside, target)
        raise
    return aside


def replace_folder(staging: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the folder `staging` in place of `target` (created when missing) and delete the old `target`.

    `staging` must be on the same filesystem as `target` (a sibling folder, say). At every moment `target`
    holds either the complete old contents or the complete new ones (with the rename fallback, a crash
    between its two renames leaves the old folder under `.<target>.old-<pid>`)."""
    staging, target = Path(staging), Path(target)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, target)
        return
    # After an exchange the old contents sit under the staging name.
    old = staging if _exchange(staging, target) else _swap_by_renames(staging, target)
    shutil.rmtree(old)
