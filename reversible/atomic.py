"""Atomic, unique file writes: readers see the old file or the new one, never a mix.

:func:`atomic_write` writes to a uniquely named temporary file in the target
directory (``.<name>.<random>.reversible-tmp``), flushes it to disk, renames it
over the target and syncs the directory.  Two writers never share a temporary
file; a writer killed mid-write leaves only a recognisable temporary file,
which :func:`remove_temporaries` deletes.  Used by checkpoints, sweeps and
downloads.
"""

import contextlib
import os
import tempfile

__all__ = ["atomic_write", "remove_temporaries", "temporary_prefix", "TEMP_SUFFIX"]

TEMP_SUFFIX = ".reversible-tmp"


def temporary_prefix(path):
    """Prefix of the temporary files written for ``path`` (hidden, named after it)."""
    return "." + os.path.basename(os.fspath(path)) + "."


def atomic_write(path, write, mode="wb"):
    """Call ``write(file)`` on a fresh temporary file next to ``path``, then rename it to ``path``.

    The data are fsync'ed before the rename and the directory after it.  On
    any exception the temporary file is removed and the exception re-raised;
    ``path`` is then untouched.  Returns ``path`` (as a string).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=TEMP_SUFFIX, dir=directory)
    try:
        os.chmod(tmp, 0o666 & ~_umask())        # mkstemp makes 0600; a plain open would not
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_directory(directory)
    return path


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_temporaries(path):
    """Delete leftover temporary files of writes to ``path``; returns their names.

    Call it only when no other process can be writing ``path`` (e.g. under a lock).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    prefix = temporary_prefix(path)
    removed = []
    for name in sorted(os.listdir(directory)):
        if name.startswith(prefix) and name.endswith(TEMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(directory, name))
                removed.append(name)
    return removed


def _fsync_directory(directory):
    """Make a rename durable on POSIX; a no-op where a directory cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
