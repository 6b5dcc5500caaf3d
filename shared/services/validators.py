"""Validators from plugins: named checks a processing rule adds to its file's validation (`validators:`).

A validator is a subclass of `Validator` registered under a name (by a package's `wharf.validators` entry
point, see shared.plugins). `check()` reads the file as a stream of chunks and returns the problems it found
(an empty list when the file passes); memory must not grow with the file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.domain.errors import ConfigurationError


class UnknownValidatorError(ConfigurationError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Validator(ABC):
    name: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = _Options

    def parse_options(self, options: Mapping[str, Any] | None) -> Any:
        try:
            return self.Options.model_validate(dict(options or {}))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
            raise ConfigurationError(f"validator {self.name}: invalid options: {problems}") from exc

    @abstractmethod
    def check(self, chunks: Iterable[bytes], options: Any, *, file_name: str) -> list[str]:
        """The problems found in the file (streamed), [] when it passes."""


class ValidatorRegistry:
    def __init__(self) -> None:
        self._items: dict[str, type[Validator]] = {}
        self._sources: dict[str, str] = {}

    def add(self, name: str, cls: type[Validator], *, source: str = "wharf") -> None:
        if name in self._items and self._items[name] is not cls:
            raise ValueError(f"validator {name!r} is already registered (by {self._sources[name]})")
        cls.name = name
        self._items[name] = cls
        self._sources[name] = source

    def get(self, name: str) -> type[Validator]:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(self.names()) or "none (install a plugin that provides one)"
            raise UnknownValidatorError(f"unknown validator {name!r}; known validators: {known}") from None

    def source(self, name: str) -> str:
        return self._sources.get(name, "")

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


VALIDATORS = ValidatorRegistry()

__all__ = ["VALIDATORS", "UnknownValidatorError", "Validator", "ValidatorRegistry"]
