"""Errors raised by ``augkd.export`` on top of :mod:`augkd.errors`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from augkd.errors import AugKDError

if TYPE_CHECKING:
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
