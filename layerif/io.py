"""Atomic writes: a crash never leaves a half-written result that looks whole.

Single files are written to a temporary sibling and renamed into place (`os.replace` is atomic on
POSIX). Result folders are assembled in a temporary sibling folder and swapped in with renames, so
a reader sees either the old complete folder, the new complete folder, or (for an instant between
two renames) no folder at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OutputError


@contextlib.contextmanager
def pushed_folder(stack: list[Path], folder: str | os.PathLike) -> Iterator[Path]:
    """Inside, `folder` is the last (innermost) entry of `stack`: where a module's work keeps
    its files while a caller says so (`setting_search.kept_trials`, `search.search_workspace`)."""
    folder = Path(folder)
    stack.append(folder)
    try:
        yield folder
    finally:
        stack.remove(folder)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    data = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    _write_atomic(Path(path), lambda f: f.write(data.encode()))


def write_json_files(files: list[tuple[str | os.PathLike, Any]]) -> None:
    """Several JSON files all or nothing: every one serialised (a non-finite number fails
    here, before anything is written), then each written to a temporary file beside its target,
    then all moved into place; on a failure before the moves no target is touched."""
    staged = []
    try:
        for path, obj in files:
            data = (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode()
            path = Path(path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                           dir=path.parent)
            except OSError as exc:
                raise _unwritable(path, exc) from exc
            staged.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~current_umask())
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def refuse_foreign_file(path: str | os.PathLike, is_ours, what: str) -> None:
    """An existing `path` is replaced only when it is a previous result of this kind
    (`is_ours(parsed JSON)`); a user's unrelated file is refused, never overwritten."""
    path = Path(path)
    if not path.exists():
        return
    if path.is_dir():
        raise OutputError(f"{path} is a folder; --out takes a file name for the {what}.")
    try:
        ours = bool(is_ours(json.loads(path.read_text())))
    except (OSError, ValueError, TypeError, AttributeError):
        ours = False
    if not ours:
        raise OutputError(f"{path} exists and is not a layerif {what}; choose another --out "
                          "(an unrelated file is never overwritten).")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    _write_atomic(Path(path), lambda f: f.write(text.encode()))


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write `array` in .npy format to `path` atomically."""
    _write_atomic(Path(path), lambda f: np.save(f, array, allow_pickle=False))


def _write_atomic(path: Path, writer) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _unwritable(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs follow the umask
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise _unwritable(path, exc) from exc
        raise


def read_utf8(path: str | os.PathLike, error: type[Exception]) -> str:
    """The text of file `path` (UTF-8; a byte-order mark is not text), or `error` with one line
    naming the file and the fix: UTF-16 (what some Windows editors save) gets the command that
    converts it, other bytes the offset of the first one that is not UTF-8."""
    data = Path(path).read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise error(f"{path}: is UTF-16 text; convert it to UTF-8 (iconv -f UTF-16 -t UTF-8 "
                    f"{path} > converted{Path(path).suffix}) and give that file.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as "
                    f"UTF-8.") from None


def current_umask() -> int:
    """The process umask (read without changing it where /proc tells it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _unwritable(path: Path, exc: OSError, flag: str = "--out") -> OutputError:
    return OutputError(f"cannot write {path} ({exc.strerror or exc}); choose a {flag} in a "
                       "folder you can write to.")


def check_writable(path: str | os.PathLike, flag: str = "--out") -> None:
    """Fail now, before any expensive work, if `path` (a file or folder to be created or
    replaced, given by option `flag`) cannot be written: its parent is created and a probe file
    made and removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _unwritable(path, exc, flag) from exc
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"cannot write {path} (it exists and is read-only); choose another "
                          f"{flag}.")


def check_output_folder(path: str | os.PathLike, owned_files: set[str] | None = None,
                        marker: str | None = None) -> None:
    """Refuse now, before any work, what `atomic_dir` would refuse when the result is ready:
    an existing `path` that is a file, or a folder holding files layerif did not write (see
    atomic_dir for `owned_files` and `marker`)."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise OutputError(f"{path} exists and is not a folder; --out takes a folder here, "
                          "choose another --out.")
    names = {p.name for p in path.iterdir()}
    if marker is not None:
        foreign = [] if marker in names or not names else sorted(names)
    else:
        foreign = sorted(n for n in names if n not in (owned_files or set()))
    if foreign:
        raise OutputError(
            f"{path} already holds files layerif did not write ({', '.join(foreign[:5])}); "
            "choose an empty or new --out folder."
        )


@contextlib.contextmanager
def atomic_dir(
    path: str | os.PathLike, owned_files: set[str] | None = None, marker: str | None = None
) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `path`, on error it is removed.

    An existing `path` is replaced only if it is a previous result of this kind: it holds only
    `owned_files`, or it holds the `marker` file (we never delete a user's unrelated files).
    """
    path = Path(path)
    check_output_folder(path, owned_files, marker)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700
    except OSError as exc:
        raise _unwritable(path, exc) from exc
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise _unwritable(path, exc) from exc
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
