"""Crash-safe persistence of the orchestrator's data files.

A file is replaced atomically: the new content goes to a temporary file in the
same directory (same filesystem, so the rename is atomic), which is flushed and
fsync'ed, then ``os.replace``'d over the old file, and finally the directory is
fsync'ed so the rename itself survives a power cut. A process killed at any
instant therefore leaves either the complete old file or the complete new one,
plus at worst an orphaned temporary file, which :func:`remove_stale_temp_files`
deletes at the next start.

Temporary files carry their writer's PID and host name
(``.<name>.<pid>@<host>.<random>.tmp``), so the start-up sweep removes only files whose
writer is gone (or had this very PID: a previous incarnation in a fresh PID namespace)
and never one that another live process sharing the directory is writing right now.
A PID means nothing across hosts (every pod's process may be PID 1), so a temporary
file of another host (another pod on a shared ReadWriteMany volume) is removed only
once it is ``FOREIGN_TEMP_STALE_S`` old: a write takes milliseconds, so a file that old
is the orphan of a killed pod, never a write in progress.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from pathlib import Path

_TEMP_SUFFIX = ".tmp"
FOREIGN_TEMP_STALE_S = 600.0
_HOST = socket.gethostname().replace("/", "_") or "localhost"


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers never see a partial file."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(
        dir=directory, prefix=f"{_temp_prefix(path)}{os.getpid()}@{_HOST}.", suffix=_TEMP_SUFFIX
    )
    try:
        with os.fdopen(fd, "wb") as temp_file:
            temp_file.write(data)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    # Not every platform can open a directory; where it cannot, rename durability
    # is the filesystem's business and there is nothing more to do.
    try:
        dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def remove_stale_temp_files(path: Path) -> int:
    """Delete temporary files a killed writer left next to ``path``; return how many."""
    if not path.parent.is_dir():
        return 0
    removed = 0
    prefix = _temp_prefix(path)
    for stale in path.parent.glob(f"{prefix}*{_TEMP_SUFFIX}"):
        # <pid>@<host>.<random> (the random part has no dots; a host name may).
        writer = stale.name.removeprefix(prefix).removesuffix(_TEMP_SUFFIX).rsplit(".", 1)[0]
        pid, _, host = writer.partition("@")
        if host and host != _HOST:
            if not _older_than(stale, FOREIGN_TEMP_STALE_S):
                continue
        elif pid.isdigit() and int(pid) != os.getpid() and _process_alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            stale.unlink()
            removed += 1
    return removed


def _older_than(path: Path, age_s: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > age_s
    except OSError:
        return False  # gone already: its writer renamed it
