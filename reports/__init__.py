"""Reports: figures and the self-contained HTML report from predictions and fits.

Nothing here fits anything: it reads the behaviour dataset (docs/files.md §2) and fits
(docs/files.md §3) and draws them.
"""

from rational_icl.reports.figures import FigureUnavailable, configurations
from rational_icl.reports.html import FIGURES, render_figures, report_tables, write_report

__all__ = [
    "FIGURES",
    "FigureUnavailable",
    "configurations",
    "render_figures",
    "report_tables",
    "write_report",
]
