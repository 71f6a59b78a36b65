"""Writes that never leave a half-written file under the final name (a killed run, a full disk)."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to PATH.tmp, flush to disk, then rename over PATH."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def check_out_folder(out: str | Path, flag: str = "--out") -> None:
    """An output folder given on the command line is a folder, or can be made one (its nearest existing ancestor is
    a writable folder): checked before any expensive work, not when the first file is written. One ConfigError."""
    from rlkit.errors import ConfigError

    path = Path(out)
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{flag} {out}: not a folder (a file is there); pass a folder")
        probe = path
    else:
        probe = next((q for q in path.absolute().parents if q.exists()), Path("/"))
        if not probe.is_dir():
            raise ConfigError(f"{flag} {out}: cannot be made: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {out}: {probe} is not writable")


def check_out_file(out: str | Path, flag: str = "--out") -> None:
    """An output file given on the command line is not a folder, and its folder exists or can be made."""
    from rlkit.errors import ConfigError

    if Path(out).is_dir():
        raise ConfigError(f"{flag} {out}: a folder is there; pass a file name")
    check_out_folder(Path(out).absolute().parent, f"{flag} {out}: its folder")
