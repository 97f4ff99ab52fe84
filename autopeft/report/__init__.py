"""Study reports: figure data as pure tables (``tables``), one self-contained HTML (``html``).

``tables`` imports no plotly; ``write_report`` imports plotly only when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_report(study: Any, path: str | Path) -> Path:
    """Write the self-contained HTML report of ``study`` to ``path`` (see ``html``)."""
    from autopeft.report.html import write_report as _write

    return _write(study, path)


__all__ = ["write_report"]
