"""The processing block: per-file validation rules (CSV, JSON, XML) and the transform to run."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from shared.catalog.common import (
    _INLINE_MESSAGE,
    _INLINE_SECRET_KEYS,
    Glob,
    Number,
    Regex,
    SecretName,
    Size,
    SizeOrZero,
    Text,
    _between,
    _match,
    _Model,
    _secret_name,
)
from shared.catalog.errors import Loc, _Invalid

_TRANSFORM_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_TRANSFORM_MESSAGE = "must be a transform name such as csv_to_jsonl (lowercase letters, digits and underscores)"


def _one_char(value: str) -> str:
    if len(value) != 1:
        raise ValueError("must be exactly one character")
    if value in "\r\n":
        raise ValueError("must not be a line break")
    return value


def _enum_value(value: Any) -> Any:
    if isinstance(value, bool):
        # YAML 1.1 turns unquoted NO, yes, on, off into booleans.
        raise ValueError("must be text; quote values such as 'NO', 'yes', 'on' or 'off'")
    if isinstance(value, int | float):
        return str(value)
    return value


class ColumnSpec(_Model):
    """How one CSV column is checked."""

    type: Literal["integer", "decimal", "date", "string", "enum", "regex"] = "string"
    format: Text | None = None
    values: Annotated[list[Annotated[str, BeforeValidator(_enum_value)]], Field(min_length=1)] | None = None
    pattern: Regex | None = None
    max_length: Annotated[int, Number, _between(1, 1_000_000)] | None = None
    required: bool = False
    sensitive: bool = False  # its values are masked in reports, events, logs and spans (mask_style)

    @model_validator(mode="after")
    def _check(self) -> ColumnSpec:
        problems: list[tuple[Loc, str]] = []
        for field, kind in (("format", "date"), ("values", "enum"), ("pattern", "regex")):
            if getattr(self, field) is not None and self.type != kind:
                problems.append(((field,), f"is only used when type is {kind} (it is {self.type})"))
            if getattr(self, field) is None and self.type == kind and kind != "date":
                problems.append(((field,), f"is required when type is {kind}"))
        if self.format is not None and self.type == "date":
            sample = datetime(2001, 12, 31, 23, 59, 58)
            try:
                datetime.strptime(sample.strftime(self.format), self.format)
            except ValueError:
                problems.append((("format",), "is not a valid strftime date format such as %Y-%m-%d"))
            if "%" not in self.format:
                problems.append((("format",), "is not a valid strftime date format such as %Y-%m-%d"))
        if problems:
            raise _Invalid(*dict.fromkeys(problems))
        return self

    @property
    def date_format(self) -> str:
        return self.format or "%Y-%m-%d"


class CsvSpec(_Model):
    """CSV dialect and column rules."""

    delimiter: Annotated[str, AfterValidator(_one_char)] = ","
    quotechar: Annotated[str, AfterValidator(_one_char)] = '"'
    header: bool = True
    required_columns: list[Text] = Field(default_factory=list)
    columns: dict[str, ColumnSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> CsvSpec:
        if self.delimiter == self.quotechar:
            raise _Invalid((("quotechar",), "must differ from delimiter"))
        if self.required_columns and not self.header:
            raise _Invalid((("required_columns",), "needs header: true (columns are found by name)"))
        return self


class Transform(_Model):
    """A named transform (resolved by the transform registry) and its options."""

    name: Annotated[str, AfterValidator(lambda v: _match(v, _TRANSFORM_NAME, _TRANSFORM_MESSAGE))] = "passthrough"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _no_inline_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        problems: list[tuple[Loc, str]] = [
            ((key,), _INLINE_MESSAGE) for key in value if key.lower() in _INLINE_SECRET_KEYS
        ]
        for key, item in value.items():
            if key.endswith("_secret"):  # a secret an option needs, by Key Vault name like every other
                try:
                    _secret_name(item if isinstance(item, str) else "")
                except ValueError as exc:
                    problems.append(((key,), str(exc)))
        if problems:
            raise _Invalid(*problems)
        return value


def _validator_name(value: str) -> str:
    _match(value, _TRANSFORM_NAME, "must be a validator name (lowercase letters, digits and underscores)")
    from shared.plugins import load_plugins
    from shared.services.validators import VALIDATORS, UnknownValidatorError

    load_plugins()
    try:
        VALIDATORS.get(value)
    except UnknownValidatorError as exc:
        raise ValueError(f"{exc} (validators come from plugins: wharf plugins list)") from None
    return value


class ValidatorRef(_Model):
    """A validator a plugin registers (entry point wharf.validators), run over the whole file before the rule's
    own validation and transform; a problem it reports fails the file's validation."""

    name: Annotated[str, AfterValidator(_validator_name)]
    options: dict[str, Any] = Field(default_factory=dict)
_JSON_PATH = re.compile(r"\$((\.[A-Za-z0-9_\-]+)|(\[(\*|\d+)\]))*")


def _json_path(value: str) -> str:
    if not _JSON_PATH.fullmatch(value):
        raise ValueError("must be a JSON path such as $.payer.iban or $[*].iban (dots, names and [*] only)")
    return value


_XML_NAME = re.compile(r"(?:[A-Za-z_][\w.\-]*)?(?:@[A-Za-z_][\w.\-]*)?")


def _xml_name(value: str) -> str:
    if not value or not _XML_NAME.fullmatch(value):
        raise ValueError("must be an XML element's local name (IBAN), an attribute (@Acct) or both (Amt@Acct)")
    return value


class PgpInbound(_Model):
    """OpenPGP on a landed file: decrypt it before detection and validation, and check its signature.

    `verify`: required (a valid signature by a key in `signer_keys_secret`), optional (unsigned is accepted, a
    bad or unknown signature is not) or off. Secrets hold ASCII-armoured keys (docs: README "Keys and trust")."""

    decrypt: bool = True
    verify: Literal["required", "optional", "off"] = "required"
    private_key_secret: SecretName | None = None
    passphrase_secret: SecretName | None = None
    signer_keys_secret: SecretName | None = None

    @model_validator(mode="after")
    def _check(self) -> PgpInbound:
        problems: list[tuple[Loc, str]] = []
        if self.decrypt and self.private_key_secret is None:
            problems.append((("private_key_secret",), "is required when decrypt is true"))
        if self.verify != "off" and self.signer_keys_secret is None:
            problems.append((("signer_keys_secret",), f"is required when verify is {self.verify}"))
        if not self.decrypt:
            problems.append((("decrypt",), "must be true: signature-only (not encrypted) files are not supported yet"))
        if problems:
            raise _Invalid(*problems)
        return self


class FileRule(_Model):
    """Validation and transform for files whose name matches the `match` glob; the first matching rule wins."""

    match: Glob = "*"
    type: Literal["csv", "json", "xml", "binary", "auto"] = "auto"
    min_bytes: SizeOrZero | None = None
    max_bytes: Size | None = None
    encoding: Literal["auto", "utf-8", "latin-1", "windows-1252"] = "auto"
    csv: CsvSpec | None = None
    max_errors: Annotated[int, Number, _between(1, 1_000_000)] = 100
    json_schema: str | dict[str, Any] | None = None
    xsd: Text | None = None
    transform: Transform = Field(default_factory=Transform)
    validators: list[ValidatorRef] = Field(default_factory=list)
    pgp: PgpInbound | None = None
    #: JSON paths whose values are masked like sensitive columns (`$.payer.iban`, `$[*].iban`, `$.items[*].pan`)
    sensitive_paths: list[Annotated[str, AfterValidator(_json_path)]] = Field(default_factory=list)
    mask_style: Literal["last4", "hash", "redact"] = "last4"
    #: XML element (`IBAN`) and attribute (`@Acct`, `Amt@Acct`) local names whose values XSD messages must not show
    sensitive_elements: list[Annotated[str, AfterValidator(_xml_name)]] = Field(default_factory=list)

    @field_validator("json_schema", mode="before")
    @classmethod
    def _check_schema(cls, value: Any) -> Any:
        if value is None or isinstance(value, dict):
            return value
        if isinstance(value, str) and value.strip():
            return value
        raise ValueError("must be a file path or an inline JSON Schema mapping")

    @model_validator(mode="after")
    def _check(self) -> FileRule:
        problems: list[tuple[Loc, str]] = []
        for field, kind in (("csv", "csv"), ("json_schema", "json"), ("xsd", "xml")):
            if getattr(self, field) is not None and self.type not in (kind, "auto"):
                problems.append(((field,), f"only applies when type is {kind} or auto (it is {self.type})"))
        if self.min_bytes is not None and self.max_bytes is not None and self.min_bytes > self.max_bytes:
            problems.append((("max_bytes",), "must not be less than min_bytes"))
        if problems:
            raise _Invalid(*problems)
        return self


class Processing(_Model):
    """How a partner's files are validated and transformed."""

    rules: list[FileRule] = Field(default_factory=list)
