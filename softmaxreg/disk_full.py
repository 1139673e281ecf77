"""A full disk, recognised wherever it surfaces.

    if is_disk_full(error):                 # anywhere in the error's chain
        path = disk_full_path(error)        # the file being written, when the error says

ENOSPC rarely arrives as a plain `OSError`: `torch.save` raises a `RuntimeError` ("unexpected
pos ...") whose context is the `OSError`, SQLite reports `database or disk is full` (SQLITE_FULL,
no errno), PostgreSQL `could not extend file ...: No space left on device`, and MLflow passes
such messages on inside its own exceptions. So the whole chain (causes and contexts) is read,
and the words count as well as the errno.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator

DISK_FULL_WORDS = ("database or disk is full", "no space left on device", "could not extend file")


def causes(error: BaseException) -> Iterator[BaseException]:
    """`error`, then every exception it was raised from or during, each once."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [e for e in (current.__context__, current.__cause__) if e is not None]


def says_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    text = str(error).lower()
    return any(words in text for words in DISK_FULL_WORDS)


def is_disk_full(error: BaseException) -> bool:
    return any(says_disk_full(e) for e in causes(error))


def disk_full_path(error: BaseException) -> str | None:
    """The file an ENOSPC in the chain was writing (a copy's destination first), if named."""
    for cause in causes(error):
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            named = cause.filename2 or cause.filename
            if named:
                return str(named)
    return None
