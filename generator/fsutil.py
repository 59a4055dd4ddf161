"""Writing files and folders so that a kill at any moment leaves either the old or the new version.

Files are written to a temp name and renamed; folders are built in a temp folder and swapped in
whole. Temp names start with a dot and say what they are, so `clean_temp` can remove what a
killed process left behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from generator.errors import AtlasError

NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
"""Write errors that mean "the disk (or a quota, or a file-size limit) is full", not a bug."""


class DiskFullError(AtlasError):
    """A write failed for lack of space: the whole run stops (every later write would fail too)."""


def disk_full(path: Path, exc: OSError) -> DiskFullError:
    return DiskFullError(str(path), f"could not be written: {os.strerror(exc.errno or 0)} "
                         "(disk, quota or file-size limit full). Nothing half-written was kept: "
                         "entries completed before it are intact",
                         "free space (or point --out/--docs/--site at a larger disk) and rerun; "
                         "the run resumes where it stopped")


def write_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` and flush it to disk; a full disk is a named error, not a bug."""
    try:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise disk_full(path, exc) from exc
        raise


def write_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    os.close(fd)
    try:
        write_file(Path(tmp), data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temp_dir_for(final: Path) -> Path:
    """An empty temp folder beside `final`, to be filled and then `swap_in`.

    Temp and old copies of `final` that a killed process left beside it are removed first.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    for pattern in (f".{final.name}.tmp-*", f".{final.name}.old-*"):
        for p in final.parent.glob(pattern):
            shutil.rmtree(p, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))


def swap_in(new: Path, final: Path) -> None:
    """Replace folder `final` by `new` (same filesystem), keeping the usual permissions."""
    umask = os.umask(0)
    os.umask(umask)
    new.chmod(0o777 & ~umask)  # mkdtemp made it 0700
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def clean_temp(root: Path) -> None:
    """Remove half-written files and folders a killed process left under `root`."""
    if root.is_dir():
        for pattern in ("**/.*.tmp-*", "**/.*.old-*"):
            for p in root.glob(pattern):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


@contextlib.contextmanager
def scratch_dir(root: Path, what: str) -> Iterator[Path]:
    """A fresh temp folder under `root` for the duration, then removed with what it holds.

    On the disk of `root` (not /tmp, which can be memory). A killed process's is named like the
    other temp files, so `clean_temp` removes it on the next run into `root`.
    """
    Path(root).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{what}.tmp-",
                                     ignore_cleanup_errors=True) as folder:
        yield Path(folder)


LOCK_FILE = ".lock"


@contextlib.contextmanager
def exclusive(folder: Path, what: str = "run") -> Iterator[None]:
    """Hold the folder's lock for the duration: a second run into the same folder is refused.

    Two runs rewriting one manifest lose each other's entries. `flock` is released by the
    kernel when the holder dies, so a killed run never leaves a stale lock behind. The lock
    file stays (empty): removing it would let two runs lock two different files.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AtlasError(str(folder), f"another {what} is writing to this folder right now",
                             "wait for it to finish, or give this one its own folder "
                             "(--out DIR)") from None
        yield
    finally:
        os.close(fd)
