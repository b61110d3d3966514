"""curate's errors.

Every error curate raises on purpose derives from :class:`CurateError`. The CLI
turns these (and only these) into a one-line message and a non-zero exit; any
other exception is a bug and keeps its traceback.

Messages say what was expected, what was found, and how to fix it::

    >>> str(FormatError("labels/a.txt", "class id", expected="0..2", found="7"))
    'labels/a.txt: class id: expected 0..2, found 7'
"""

from __future__ import annotations

from pathlib import Path


class CurateError(Exception):
    """Root of every error curate raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        field: str | None = None,
        expected: object = None,
        found: object = None,
        hint: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.field = field
        self.expected = expected
        self.found = found
        self.hint = hint
        parts = []
        if self.file:
            parts.append(self.file)
        if field:
            parts.append(field)
        body = message
        if expected is not None or found is not None:
            body = f"{message}expected {expected}, found {found}" if message else f"expected {expected}, found {found}"
        parts.append(body)
        text = ": ".join(p for p in parts if p)
        if hint:
            text = f"{text} ({hint})"
        super().__init__(text)


class WorkspaceError(CurateError):
    """The workspace is missing, damaged, or not a curate workspace."""


class WorkspaceLockedError(WorkspaceError):
    """Another curate process holds the workspace."""


class DamagedWorkspaceError(WorkspaceError):
    """A workspace file (a table, ``curate.json``, ``sources.json``, ``.lock``) exists but cannot be used.

    The message names the file, what was found, and the fix (restore it, or
    re-run ``curate ingest``); see docs/reliability.md#damaged-workspaces.
    """


class WorkspaceWriteError(WorkspaceError):
    """The workspace cannot be written: the disk is full, or the folder is read-only.

    Raised before anything is committed, so the tables are as they were.
    """


class SourceError(CurateError):
    """A source given to ingest cannot be read as asked."""


class FormatError(CurateError):
    """A dataset file does not follow its format.

    Carries the file and field; the message states expected vs found.
    """

    def __init__(
        self,
        file: str | Path | None,
        field: str | None,
        *,
        expected: object = None,
        found: object = None,
        message: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, file=file, field=field, expected=expected, found=found, hint=hint)


class SchemaError(CurateError):
    """A table does not match its declared schema."""


class OptionError(CurateError):
    """An option value is out of range or inconsistent with others."""


class ModelNotFoundError(CurateError):
    """A model file (e.g. the face detector) could not be found or fetched."""


class ExportError(CurateError):
    """An export could not be written or did not verify."""
