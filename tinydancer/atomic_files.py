"""Writing files so that nothing is lost: only regular files, atomically.

Every file tinydancer writes (model files, training reports) goes through :func:`write_atomic`: the data is
written to a temporary file in the target's folder, fsynced, and renamed over the target, so a reader sees
the old file or the new one, never a partial write. A symlink is followed: its target is written and the
link stays. A path that exists and is not a regular file (a folder, a FIFO, a device such as ``/dev/null``,
a socket) is refused and left untouched.
"""

from __future__ import annotations

import os
import stat
import tempfile
from os import PathLike

from tinydancer.errors import OutputFileError, TinyDancerError

__all__ = ["check_writable", "describe_kind", "write_atomic"]

PathArg = str | bytes | PathLike[str] | PathLike[bytes]

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _umask() -> int:
    """The process umask, read without changing it where Linux reports it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def describe_kind(mode: int) -> str:
    """What a file that is not a regular one is, from its ``st_mode``: "a folder", "a FIFO", ..."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def check_writable(path: PathArg, error: type[TinyDancerError] = OutputFileError) -> tuple[str, int | None]:
    """Where :func:`write_atomic` would write ``path``, checked without writing anything.

    Returns:
        The target (``path`` made absolute, with symlinks followed) and the permission bits of the regular
        file there, or None when there is none yet.

    Raises:
        ``error``: the path exists and is not a regular file, or its folder does not exist or is not a folder.
    """
    given = os.fsdecode(os.fspath(path))
    target = os.path.realpath(given)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise error(f"{given}: cannot be checked ({exc.strerror})") from None
    else:
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{given}: is {describe_kind(st.st_mode)}, not a regular file; it was left untouched")
        mode = stat.S_IMODE(st.st_mode)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise error(f"{given}: the folder {folder} does not exist")
    return target, mode


def write_atomic(path: PathArg, data: bytes, error: type[TinyDancerError] = OutputFileError) -> str:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync and rename.

    A symlink is followed and its target written. A file that is replaced keeps its permissions; a new one
    gets the usual 0o666 less the umask.

    Returns:
        The path written (absolute, symlinks followed).

    Raises:
        ``error``: the path exists and is not a regular file, or the folder is missing or cannot be
            written; the target is then left as it was.
    """
    target, mode = check_writable(path, error)
    if mode is None:
        mode = 0o666 & ~_umask()
    folder = os.path.dirname(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)[:100]}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise error(f"{target}: cannot write into {folder} ({exc.strerror})") from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise error(f"{target}: cannot be written ({exc.strerror})") from None
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return target
