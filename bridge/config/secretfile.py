"""Writing files that hold secrets (the Fernet key, config.ini's tokens, the registration).

Why one helper: a secret file must be mode 0600 from its first byte, and nothing planted
beside it (a symlink, a leftover temp file of another mode) may decide where it lands or
with which mode. So the bytes go to a fresh temp file of a random name, made with
O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600, synced, then renamed over the target (rename
replaces a symlink itself, never follows it), or hard-linked when an existing file must not
be replaced. Standard library only; called by the CLI (main thread) before the bridge runs.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

PRIVATE_MODE = 0o600
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) \
    | getattr(os, "O_CLOEXEC", 0)


def write_private(path: Path, data: bytes, *, replace: bool = True) -> Path:
    """Write `data` to `path`, mode 0600, atomically.

    replace=False refuses (FileExistsError) when anything, even a dangling symlink, is at
    `path` already.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, _FLAGS, PRIVATE_MODE)
    try:
        try:
            os.fchmod(fd, PRIVATE_MODE)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path, follow_symlinks=False)
    finally:
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()
    return path


def readable_by_others(path: Path) -> bool:
    """Whether group or other users may read or write the file (symlinks are followed)."""
    return bool(stat.S_IMODE(Path(path).stat().st_mode) & 0o077)
