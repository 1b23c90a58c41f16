"""Writing a file so that a reader, a crash or a full disk never sees half of it.

The content goes to a temporary file beside the target, is flushed to disk, and is then renamed over the
target (atomic on one file system). On failure the temporary file is removed and the previous version of the
target stays as it was; the OSError propagates for the caller to word. This module imports no torch, so the
report and plot writers can use it cheaply.
"""
from __future__ import annotations

import os
import re
import secrets
from contextlib import suppress
from pathlib import Path
from typing import Any, Callable, Tuple

# Random names tried before giving up (a clash is 1 in 4 billion per try).
TEMP_NAME_ATTEMPTS = 100


def replace_atomically(path: Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call write(file_object) on a temp file beside `path`, fsync, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = _create_temp_file(path)
    try:
        with os.fdopen(handle, mode) as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:  # also on Ctrl-C: never leave a stray temp file beside the target
        with suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    _remove_stale_temp_files(path)
    return path


def _remove_stale_temp_files(path: Path) -> None:
    """Delete temp files of `path` left by an earlier writer killed mid-write (SIGKILL skips the cleanup
    above), so repeated kills do not pile up checkpoint-sized leftovers. Only temp names of this target
    match; one process (rank 0) writes a given target, so none of them is still being written."""
    own_temp = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    for leftover in path.parent.iterdir():
        if own_temp.fullmatch(leftover.name):
            with suppress(FileNotFoundError):
                leftover.unlink()


def _create_temp_file(path: Path) -> Tuple[int, str]:
    """(descriptor, name) of a new file .<name>.XXXXXXXX.tmp beside `path`, opened for writing.

    Created with mode 0666, so the kernel applies the process umask as for any file the user makes:
    results are meant to be shared, mkstemp would make them 0600, and reading the umask to chmod
    afterwards would mean setting it, for the whole process, for a moment."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(TEMP_NAME_ATTEMPTS):
        name = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path} after {TEMP_NAME_ATTEMPTS} tries")
