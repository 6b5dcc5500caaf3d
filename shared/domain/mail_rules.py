"""Which mails and attachments a mailbox partner accepts: sender allow-list, subject regex, attachment rules."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.domain.globs import glob_match


class AttachmentKind(StrEnum):
    FILE = "file"
    ITEM = "item"  # an attached message (.eml / .msg)
    REFERENCE = "reference"  # a link to a cloud file: nothing to ingest


class Verdict(StrEnum):
    ACCEPT = "ACCEPT"
    SKIP = "SKIP"  # not ours by rule (inline image, item attachment, name): ignored quietly
    REJECT = "REJECT"  # ours by name but refused (too large): recorded and logged once


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPT


ACCEPT = Decision(Verdict.ACCEPT)


def normalise_address(address: str) -> str:
    """`" Alice@Example.COM "` -> `alice@example.com`; anything not one address becomes ``."""
    address = address.strip().lower()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or "@" in local or any(c.isspace() for c in address):
        return ""
    return address


def sender_allowed(address: str, allow: Iterable[str]) -> bool:
    """Exact addresses or whole domains (`*@acme.com`, which does not match `x@sub.acme.com` or
    `x@notacme.com`). An empty allow-list allows nobody."""
    address = normalise_address(address)
    if not address:
        return False
    domain = address.rpartition("@")[2]
    for pattern in allow:
        pattern = pattern.strip().lower()
        if pattern.startswith("*@"):
            if domain == pattern[2:]:
                return True
        elif address == pattern:
            return True
    return False


def subject_matches(subject: str, pattern: str | None) -> bool:
    """`re.search` (write `^...$` to anchor, `(?i)` to ignore case); no pattern matches every subject."""
    return pattern is None or re.search(pattern, subject or "") is not None


def name_matches(name: str, globs: Iterable[str]) -> bool:
    """Shell-style, case-insensitive, on the file name only (as every catalogue glob)."""
    return any(glob_match(name, g) for g in globs)


@dataclass(frozen=True)
class MailRules:
    """A mailbox partner's rules. Build from the catalogue block with `MailRules.from_config`."""

    sender_allow: tuple[str, ...]
    subject_regex: str | None = None
    attachment_globs: tuple[str, ...] = ("*",)
    max_attachment_bytes: int | None = None
    item_attachments: str = "skip"  # skip | keep
    inline_images: str = "skip"  # skip | keep

    @classmethod
    def from_config(cls, cfg: Any) -> MailRules:
        """From anything shaped like the catalogue's Mailbox block."""
        return cls(
            sender_allow=tuple(cfg.sender_allow), subject_regex=cfg.subject_regex,
            attachment_globs=tuple(cfg.attachment_globs), max_attachment_bytes=cfg.max_attachment_bytes,
            item_attachments=cfg.item_attachments, inline_images=cfg.inline_images,
        )

    def check_message(self, sender: str, subject: str) -> Decision:
        """Sender first, then subject. A refusal reason names the sender, never message content."""
        if not sender_allowed(sender, self.sender_allow):
            return Decision(Verdict.REJECT, f"sender {normalise_address(sender) or '(none)'} is not allowed")
        if not subject_matches(subject, self.subject_regex):
            return Decision(Verdict.REJECT, "subject does not match subject_regex")
        return ACCEPT

    def check_attachment(self, file_name: str, *, kind: str, is_inline: bool, size: int) -> Decision:
        """`file_name` is the sanitised name the file would land as (globs match what lands)."""
        kind = AttachmentKind(kind)
        if kind is AttachmentKind.REFERENCE:
            return Decision(Verdict.SKIP, "reference attachment (a link, not a file)")
        if kind is AttachmentKind.ITEM and self.item_attachments != "keep":
            return Decision(Verdict.SKIP, "item attachment (item_attachments: skip)")
        if is_inline and kind is AttachmentKind.FILE and self.inline_images != "keep":
            return Decision(Verdict.SKIP, "inline attachment (inline_images: skip)")
        if not name_matches(file_name, self.attachment_globs):
            return Decision(Verdict.SKIP, "name matches no attachment_globs")
        if self.max_attachment_bytes is not None and size > self.max_attachment_bytes:
            return Decision(Verdict.REJECT, f"{size} bytes is over max_attachment_bytes ({self.max_attachment_bytes})")
        return ACCEPT

    @property
    def needs_inline(self) -> bool:
        """Whether inline attachments are wanted: Graph's hasAttachments ignores them, so the
        server-side `hasAttachments eq true` filter must then be left off."""
        return self.inline_images == "keep"


def item_file_name(name: str) -> str:
    """An attached message lands as `.eml` (Graph's `$value` of an item attachment is its MIME)."""
    return name if name.lower().endswith(".eml") else f"{name}.eml"
