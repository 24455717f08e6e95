"""reversible/atomic.py: atomic, unique writes that leave nothing behind on failure."""

import os
import stat
import sys

import pytest

from reversible.atomic import atomic_write, remove_temporaries


def test_a_write_replaces_the_file_with_ordinary_permissions(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    atomic_write(path, lambda fh: fh.write("new"), mode="w")
    assert path.read_text() == "new" and sorted(os.listdir(tmp_path)) == ["out.txt"]
    if sys.platform != "win32":
        mask = os.umask(0o022)
        os.umask(mask)
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask     # not mkstemp's 0600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")

    def fail(fh):
        fh.write("half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, fail, mode="w")
    assert path.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["out.txt"]
    assert remove_temporaries(path) == []
