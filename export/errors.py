"""Errors raised by ``augkd.export`` on top of :mod:`augkd.errors`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from augkd.errors import AugKDError, StorageError

if TYPE_CHECKING:
    from typing import Any

    from augkd.export.report import ExportReport


class ExportError(AugKDError):
    """An export step could not produce an artifact (both ONNX exporters failed, an engine build failed, ...)."""


class ExportCheckError(ExportError):
    """Artifacts were written but failed a parity or accuracy check.

    The report (``export_report.json`` / ``.md``) and the artifacts are kept on disk so the failure can
    be inspected; ``report`` holds the same report in memory.
    """

    def __init__(self, message: str, report: ExportReport) -> None:
        super().__init__(message)
        self.report = report


class ResultNotSavedError(StorageError):
    """Results were measured but their files could not be written (no space, read-only, ...).

    ``result`` holds them (the JSON-ready dict the files would have held) so that the caller can print them
    before reporting the error.
    """

    def __init__(self, error: StorageError, result: dict[str, Any]) -> None:
        super().__init__(f"{error}; the results are printed on stdout only", error.path, error.errno)
        self.result = result
