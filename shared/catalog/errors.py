"""What a broken catalogue raises: one Problem per thing to change, and the catalogue's exceptions."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from shared.domain.errors import ConfigurationError, NotFoundError, PermanentError

#: Where in the document: keys and list indexes from the top, e.g. ("partners", 0, "sftp", "port").
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a catalogue: where (`partners[acme].sftp.port`), what, and the line if known."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class CatalogError(ConfigurationError):
    """The catalogue is invalid. `.problems` holds one line per problem; `str()` prefixes the file name."""

    def __init__(self, problems: Sequence[Problem | str], *, source: str = "<catalog>") -> None:
        self.details: list[Problem] = [p if isinstance(p, Problem) else Problem("", p) for p in problems]
        self.problems: list[str] = [str(p) for p in self.details]
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        lines = []
        for problem in self.details:
            where = f"{self.source}:{problem.line}" if problem.line else self.source
            lines.append(f"{where}: {problem}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self._render()


class PartnerNotFoundError(NotFoundError, PermanentError, KeyError):
    """`Catalog.get` was asked for a partner id the catalogue does not define."""

    def __init__(self, partner_id: str, known: Sequence[str] = ()) -> None:
        self.partner_id = partner_id
        message = f"partner {partner_id!r} is not in the catalogue"
        # One close match helps with a typo; the whole list is not for whoever asks (HTTP 404s, job events).
        close = difflib.get_close_matches(partner_id, list(known), n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


class _Invalid(ValueError):
    """Raised by validators to report problems at locations below the model being validated."""

    def __init__(self, *items: tuple[Loc, str]) -> None:
        super().__init__("; ".join(message for _, message in items))
        self.items = items
