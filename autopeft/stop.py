"""A Ctrl-C that cannot be lost.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be when SIGINT
arrives; inside a destructor or a generator's clean-up the exception is printed as
"ignored" and the run goes on training. The CLI installs :func:`on_sigint`, which also
records the request, and the training loop calls :func:`check` every step, so a swallowed
interrupt still stops the run at the next step.
"""

from __future__ import annotations

import threading
from typing import Any

#: Set once Ctrl-C was pressed (see the module doc).
REQUESTED = threading.Event()


def on_sigint(signum: int, frame: Any) -> None:
    """SIGINT handler: remember the request, then interrupt as Python's default would."""
    REQUESTED.set()
    raise KeyboardInterrupt


def check() -> None:
    """Raise ``KeyboardInterrupt`` when Ctrl-C was pressed (a no-op otherwise)."""
    if REQUESTED.is_set():
        raise KeyboardInterrupt
