"""Atomic file output: write to a temporary file in the same folder, then rename.

An interrupted run never leaves a file that looks complete. Finished files get the mode a plain
``open()`` would give them (``0o666 & ~umask``), not ``mkstemp``'s 0600. A full disk is a
:class:`DiskFullError` naming the file; the previous version of the file is kept.

Temporaries are named ``.STEM.XXXXXXXX.partSUFFIX``; :func:`remove_stale_temporaries` deletes
the ones a killed process (``kill -9``, power loss) left behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

# what mkstemp puts between prefix and suffix: 8 of [a-z0-9_]
_TEMP_NAME = re.compile(r"^\.(?P<stem>.+)\.[a-z0-9_]{8}\.part(?P<suffix>\.[A-Za-z0-9]+)?$")


class DiskFullError(OSError):
    """No space left on the device while writing a file (``errno`` is ``ENOSPC``)."""

    def __str__(self) -> str:
        return str(self.strerror)


def disk_full(path: str | Path, detail: str) -> DiskFullError:
    """The error for a write of ``path`` that failed for lack of space."""
    path = Path(path)
    return DiskFullError(errno.ENOSPC, f"{path}: disk full, cannot write it ({detail}); "
                                       f"the previous {path.name}, if any, is kept")


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path`` (mode
    ``0o666 & ~umask``), on error it is removed. The temporary name keeps the suffix so
    writers pick the format. ``ENOSPC`` becomes a :class:`DiskFullError` naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC \
                and not isinstance(exc, DiskFullError):
            raise disk_full(path, exc.strerror or str(exc)) from exc
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def remove_stale_temporaries(folder: str | Path, names: Iterable[str],
                             older_than: float) -> list[Path]:
    """Delete this module's temporaries of the files ``names`` (e.g. ``"last.pt"``) in
    ``folder`` last modified before ``older_than`` (a ``time.time()``); returns them.

    Only call it while no other process may be writing these files (e.g. holding a
    :class:`FolderLock`): a temporary being written is indistinguishable from a stale one.
    """
    wanted = {(Path(n).stem, Path(n).suffix) for n in names}
    removed = []
    for p in Path(folder).iterdir():
        m = _TEMP_NAME.match(p.name)
        if not m or (m["stem"], m["suffix"] or "") not in wanted:
            continue
        with contextlib.suppress(FileNotFoundError):
            if p.is_file() and p.stat().st_mtime < older_than:
                p.unlink()
                removed.append(p)
    return removed


class FolderLock:
    """An exclusive advisory lock on ``folder`` (``flock`` of ``folder/NAME``), released by
    :meth:`release` or when the process dies. ``held`` is False where the file system or the
    platform cannot lock; :class:`BlockingIOError` when another process holds it."""

    def __init__(self, folder: str | Path, name: str = ".temseg.lock") -> None:
        self.path = Path(folder) / name
        self.held = False
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.held = True
        except BlockingIOError:
            self.release()
            raise
        except (ImportError, OSError):  # no fcntl (Windows), or ENOLCK on some NFS mounts
            pass

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self.held = False
