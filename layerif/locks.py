"""One run per output: every command that writes an output (a folder, a file, an experiment's
cells) holds a lock on it while it runs.

A second run on the same output (`score --out X` started twice, two `experiment run` on one
folder from two terminals) is refused at once with one line naming the running one (its pid,
command and start time), or, with `--wait`, waits for it and then runs (resuming from what it
left, where the command resumes).

The lock is an `flock` on a small file in `$LAYERIF_CACHE/locks/`, named by a hash of the
output's absolute path, so that nothing appears beside the user's output. The kernel drops an
flock when its process dies, so a run killed with kill -9 never blocks the next one; its
record (pid, command, start) is still in the file, which is how the next run knows it took
over a stale lock and says so. A run that ends normally removes the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .cache import cache_root
from .errors import OutputError


def lock_path(out: str | os.PathLike) -> Path:
    """The lock file of output `out` (its absolute path, symlinks resolved, hashed)."""
    key = hashlib.sha256(str(Path(out).expanduser().resolve()).encode()).hexdigest()[:24]
    return cache_root() / "locks" / f"{key}.lock"


def is_secondary_rank() -> bool:
    """True in a torchrun worker other than rank 0: the ranks of one run share its output (rank
    0 holds the lock for all of them)."""
    return int(os.environ.get("RANK", "0") or 0) != 0


def _read_record(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        record = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError):
        record = {}
    return record if isinstance(record, dict) else {}


def describe(record: dict) -> str:
    """'pid 123 on host, `layerif score ...`, started 2026-12-02 22:40:01' (what is known)."""
    if not record:
        return "another layerif run (its record is not written yet)"
    parts = [f"pid {record.get('pid', '?')}"]
    if record.get("host") and record["host"] != socket.gethostname():
        parts[0] += f" on {record['host']}"
    if record.get("command"):
        parts.append(f"`{record['command']}`")
    if record.get("started"):
        parts.append("started " + time.strftime("%Y-%m-%d %H:%M:%S",
                                                time.localtime(record["started"])))
    return ", ".join(parts)


def _open_locked(path: Path, out, wait: bool) -> int:
    """An fd of `path` holding its flock. A run that ends removes the file while it holds the
    lock, so a file taken after waiting may no longer be the one at `path`: then the lock is
    taken again on the file that is."""
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot create the lock file {path} for {out}: {exc.strerror}; "
                              f"set LAYERIF_CACHE to a writable folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe(_read_record(fd))
            if not wait:
                os.close(fd)
                raise OutputError(
                    f"{out} is being written by another run ({holder}); wait for it to end, "
                    f"or add --wait to start when it does") from None
            print(f"waiting for {out}: it is being written by {holder}", file=sys.stderr,
                  flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # removed or replaced while we waited: lock the current one


@contextlib.contextmanager
def output_lock(out: str | os.PathLike, command: str, wait: bool = False) -> Iterator[None]:
    """Hold the lock on output `out` for the duration of the block.

    Raises OutputError at once when another live run holds it (unless `wait`, then blocks until
    it is released, saying so on stderr). Taking over the lock of a run that died is said on
    stderr."""
    path = lock_path(out)
    fd = _open_locked(path, out, wait)
    try:
        left = _read_record(fd)
        if left:  # its holder ended without removing it: killed, or the machine went down
            print(f"note: took over the lock on {out} from a run that is gone ({describe(left)})",
                  file=sys.stderr, flush=True)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                  "started": time.time(), "out": str(out)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        try:
            yield
        finally:  # ended normally (an error and Ctrl-C included): nothing left behind
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        os.close(fd)  # releases the flock
