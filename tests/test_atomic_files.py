"""tinydancer.atomic_files: whole files or nothing, and only regular files."""

from __future__ import annotations

import errno
import os
import stat
import tempfile

import pytest

from tinydancer.atomic_files import check_writable, write_atomic
from tinydancer.errors import ModelFileError, OutputFileError


def test_writes_a_new_file_with_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        written = write_atomic(tmp_path / "r.json", b"{}")
    finally:
        os.umask(old)
    assert written == str(tmp_path / "r.json") and (tmp_path / "r.json").read_bytes() == b"{}"
    assert stat.S_IMODE(os.stat(written).st_mode) == 0o640


def test_replacing_keeps_the_permissions(tmp_path):
    path = tmp_path / "r.json"
    path.write_bytes(b"old")
    path.chmod(0o600)
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_a_symlink_is_followed(tmp_path):
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "r.json"
    link = tmp_path / "r.json"
    link.symlink_to(target)  # dangling: the target is created
    assert write_atomic(link, b"1") == str(target)
    assert link.is_symlink() and target.read_bytes() == b"1"


@pytest.mark.parametrize("error", [OutputFileError, ModelFileError])
def test_a_fifo_is_refused_untouched(tmp_path, error):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(error, match="pipe: is a FIFO, not a regular file; it was left untouched"):
        write_atomic(fifo, b"x", error)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_a_missing_folder_is_refused_before_writing(tmp_path):
    with pytest.raises(OutputFileError, match="the folder .*missing does not exist"):
        check_writable(tmp_path / "missing" / "r.json")
    with pytest.raises(OutputFileError, match="does not exist"):
        write_atomic(tmp_path / "missing" / "r.json", b"x")
    assert list(tmp_path.iterdir()) == []


def test_check_writable_writes_nothing(tmp_path):
    assert check_writable(tmp_path / "new.json") == (str(tmp_path / "new.json"), None)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_cannot_be_written(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OutputFileError, match="cannot write into .*Read-only file system"):
        write_atomic(tmp_path / "r.json", b"x")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rename_leaves_the_target_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    path.write_bytes(b"old")

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(OutputFileError, match="cannot be written .*No space left on device"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]
