"""Writing files and folders so that a kill at any moment leaves either the old or the new version.

Files are written to a temp name and renamed; folders are built in a temp folder and swapped in
whole. Temp names start with a dot and say what they are, so `clean_temp` can remove what a
killed process left behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
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
