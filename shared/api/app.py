"""Every v1 route registered (JSON API and console) and the one entry point the function calls."""

from __future__ import annotations

from shared.api import console as _console  # noqa: F401 - registers the console's routes
from shared.api.handlers import dispatch

__all__ = ["dispatch"]
