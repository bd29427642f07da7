"""Reports: a self-contained HTML page per evaluation (or comparison of erased models)."""

from unsee.report.html import render_report, write_report

__all__ = ["render_report", "write_report"]
