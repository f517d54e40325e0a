"""Writing files and folders atomically, and cleaning what a crash left.

Every file or folder keras-bridge writes (a saved ensemble, a SavedModel,
an ONNX model) is first written to a hidden staging path beside its target,
``.<name>.<pid>-<token>.partial[<ext>]``, then renamed into place: readers
(TF Serving watching a version folder, say) never see half a model. A
process killed mid-write leaves its staging path behind; the next write of
the same target removes it, with a warning naming what was removed.
"""

import contextlib
import os
import re
import secrets
import shutil

from keras_bridge.messages import warn

_PARTIAL = ".partial"


def _staging_name(base: str, suffix: str = "") -> str:
    return f".{base}.{os.getpid()}-{secrets.token_hex(4)}{_PARTIAL}{suffix}"


def _owner_alive(name: str) -> bool:
    match = re.search(r"\.(\d+)-[0-9a-f]+\.partial", name)
    if not match:
        return False
    pid = int(match.group(1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftovers(path) -> list:
    """Staging paths of earlier, interrupted writes of ``path``.

    These are hidden names beside ``path`` that start with ``.<name>.``
    and were made by this module (or by keras-bridge 0.1, which named
    them ``.<name>.<...>.tmp``) by a process that is no longer running.
    """
    path = os.path.abspath(os.fspath(path))
    parent, base = os.path.split(path)
    if not os.path.isdir(parent):
        return []
    prefix = f".{base}."
    found = []
    for name in sorted(os.listdir(parent)):
        if not name.startswith(prefix):
            continue
        ours = _PARTIAL in name
        # keras-bridge 0.1's staging names, which carry no live owner.
        old = not ours and re.search(r"\.tmp(\.keras)?$", name) is not None
        if (ours and not _owner_alive(name)) or old:
            found.append(os.path.join(parent, name))
    return found


def clean_leftovers(path) -> list:
    """Removes the leftovers of interrupted writes of ``path``.

    A staging copy of a replaced version (``...partial.old``) is put back
    when ``path`` itself is missing, so nothing is lost. Returns the paths
    removed or restored, and warns naming them.
    """
    path = os.path.abspath(os.fspath(path))
    found, restored = leftovers(path), None
    for leftover in found:
        if leftover.endswith(".old") and not os.path.exists(path):
            os.rename(leftover, path)
            restored = os.path.basename(leftover)
        elif os.path.isdir(leftover):
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            os.remove(leftover)
    removed = [os.path.basename(p) for p in found]
    if restored:
        removed.remove(restored)
        warn(
            f"An interrupted earlier write of {path!r} had moved the "
            f"previous version aside; it was put back from {restored!r}.",
        )
    if removed:
        warn(
            f"Removed what an interrupted earlier write of {path!r} left "
            f"behind: {removed}.",
        )
    return found


def check_target(
    path, folder: bool, overwrite, argument: str = "path", replaces=None
):
    """Checks that ``path`` may be written: a file (``folder=False``) or a
    folder, replacing an existing one of the same kind only with
    ``overwrite=True``. Returns the absolute path.

    ``replaces`` narrows what ``overwrite=True`` may replace: a function
    of the existing path that returns None when it may be replaced, or
    a sentence saying what it holds (e.g. "is a folder holding 1, 2, not
    a SavedModel"), which is refused with a `ValueError`.

    Example:

    >>> os.path.relpath(check_target("serving/digits/1", folder=True,
    ...     overwrite=False))
    'serving/digits/1'
    >>> os.makedirs("serving/digits/1")
    >>> check_target("serving/digits/1", folder=True, overwrite=False)
    Traceback (most recent call last):
    ...
    FileExistsError: '.../serving/digits/1' exists; pass `overwrite=True` ...
    """
    if not isinstance(overwrite, bool):
        raise ValueError(
            f"`overwrite` must be True or False; received {overwrite!r}."
        )
    path = os.path.abspath(os.fspath(path))
    kind = "folder" if folder else "file"
    if os.path.exists(path):
        if os.path.isdir(path) != folder:
            found = "folder" if os.path.isdir(path) else "file"
            raise ValueError(
                f"`{argument}` {path!r} is a {found}; this writes a {kind}, "
                f"which never replaces a {found}. Choose another path."
            )
        if not overwrite:
            raise FileExistsError(
                f"{path!r} exists; pass `overwrite=True` to replace it."
            )
        problem = None if replaces is None else replaces(path)
        if problem:
            raise ValueError(
                f"`{argument}` {path!r} {problem}; nothing was written. "
                "Choose another path, or move it away first."
            )
    return path


def saved_model_or_empty(path) -> str | None:
    """`check_target`'s ``replaces`` for a SavedModel: None when ``path``
    is a folder holding ``saved_model.pb`` or nothing, else why not.

    ``overwrite=True`` replaces what an export wrote, never a user's
    folder: a SavedModel's parent (``serving/digits`` holding the
    versions ``1/``, ``2/``) or any other folder is refused.

    Example:

    >>> os.makedirs("serving/digits/1")
    >>> open("serving/digits/1/saved_model.pb", "w").close()
    >>> saved_model_or_empty("serving/digits/1") is None
    True
    >>> print(saved_model_or_empty("serving/digits"))
    is a folder holding ['1'], not a SavedModel (it has no saved_model.pb):
    `overwrite=True` replaces only a SavedModel or an empty folder. A new
    version goes to a new numbered folder, e.g. serving/digits/2
    """
    names = sorted(os.listdir(path))
    if not names or "saved_model.pb" in names:
        return None
    shown = names if len(names) <= 5 else [*names[:5], "..."]
    versions = [int(name) for name in names if name.isdigit()]
    hint = ""
    if versions:
        hint = (
            ". A new version goes to a new numbered folder, e.g. "
            f"{os.path.join(path, str(max(versions) + 1))}"
        )
    return (
        f"is a folder holding {shown}, not a SavedModel (it has no "
        "saved_model.pb): `overwrite=True` replaces only a SavedModel or "
        f"an empty folder{hint}"
    )


@contextlib.contextmanager
def atomic_write(
    path,
    overwrite: bool = False,
    suffix: str = "",
    folder: bool = False,
    replaces=None,
):
    """Yields a staging path; on success it is renamed to ``path``.

    The staging path is beside ``path`` (same file system) and ends in
    ``suffix`` (e.g. ``".keras"``, which Keras requires of its archives).
    Whatever is written there, a file or a folder, replaces ``path`` only
    when the block ends without an error; otherwise it is removed. An
    existing folder is swapped out and deleted after the rename.

    Args:
        path: the target file or folder.
        overwrite: replace an existing ``path``; otherwise
            `FileExistsError`.
        suffix: ending of the staging name.
        folder: whether a folder (rather than a file) is written.
        replaces: what ``overwrite=True`` may replace (see
            `check_target`); None: any file or folder of its kind.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> with atomic_write("model.keras", suffix=".keras") as staging:
    ...     keras.saving.save_model(model, staging)
    >>> os.listdir(".")
    ['model.keras']
    """
    # Leftovers first: one may be the previous version, put back in
    # place, which `overwrite` must then protect like any other.
    clean_leftovers(path)
    path = check_target(path, folder, overwrite, replaces=replaces)
    parent, base = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, _staging_name(base, suffix))
    try:
        yield staging
        if not os.path.exists(staging):
            raise RuntimeError(f"Nothing was written to {staging!r}.")
        _move_into_place(staging, path)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
        elif os.path.exists(staging):
            os.remove(staging)


def _move_into_place(source: str, target: str) -> None:
    if not os.path.isdir(target):
        os.replace(source, target)
        return
    parent, base = os.path.split(target)
    old = os.path.join(parent, _staging_name(base, ".old"))
    os.rename(target, old)
    try:
        os.rename(source, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def run_folder(path, argument: str = "path") -> str:
    """A new folder for a run's outputs: ``path``, or ``path-2``, ``-3``,
    ... when it already holds something, so no earlier output is lost.
    Created, and checked to be writable, before anything runs.

    Args:
        path: the preferred folder.
        argument: the name errors give ``path``.

    Returns:
        The folder created (or the empty one found).

    Example:

    >>> first = run_folder("runs/digits")
    >>> open(os.path.join(first, "report.md"), "w").close()
    >>> run_folder("runs/digits")
    'runs/digits-2'
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"`{argument}` {path!r} is a file, not a folder.")
    candidate, number = path, 1
    while os.path.exists(candidate) and (
        not os.path.isdir(candidate) or os.listdir(candidate)
    ):
        number += 1
        candidate = f"{path}-{number}"
    try:
        os.makedirs(candidate, exist_ok=True)
        probe = os.path.join(candidate, ".write-check")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise ValueError(
            f"`{argument}` {path!r} cannot be written: {error.strerror}."
        ) from error
    return candidate
