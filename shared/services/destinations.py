"""Destination kinds: one class per kind, registered under the name a route's `kind:` uses.

Built-ins: blob, event, sftp (shared.services.deliver) and email. A kind is a subclass of `DestinationKind` with
`deliver()`; a third-party package adds one through the `wharf.destinations` entry point (shared.plugins), and
its `Options` pydantic model is what the catalogue validates the destination's other keys against.

Every delivery of a kind that does not keep its own Deliveries record (`records_delivery = False`) gets one
here, around `deliver()`: PENDING -> SENDING -> SENT, or FAILED with the reason. A destination whose record is
SENT is not delivered again when its activity (or the whole route step) runs again: it returns what it
returned then (the job's file.routed event of that index), so a retried job re-sends only what failed.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.domain.delivery import Delivery, DeliveryState
from shared.domain.errors import ConfigurationError, ConflictError, NotFoundError, PermanentError
from shared.domain.jobs import EventType, Job, utcnow
from shared.observability.redaction import redact
from shared.observability.tracing import current_trace_id, log_fields, span

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

DeliverFunction = Callable[["Services", Job, Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]],
                           dict[str, Any]]


class DeliveryNotConfiguredError(PermanentError):
    """A route names a destination kind whose delivery is not configured in this deployment."""


class UnknownDestinationError(ConfigurationError, KeyError):
    """No destination kind is registered under a name; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class PluginOptions(BaseModel):
    """The default options model of a plugin kind: no keys besides `kind`."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DestinationKind(ABC):
    """One destination kind. `deliver()` puts the job's output (a blob reference: container, path, name, bytes,
    sha256) where `dest` (the route's destination, as a dict) says, and returns what the job's file.routed event
    records: at least `kind` and `target`. It must be idempotent for one (job, index): an activity is retried.

    Raise a PermanentError when retrying cannot help (the job fails at once), anything else to be retried."""

    name: ClassVar[str] = ""
    #: The catalogue model of a plugin kind's keys (besides `kind`). Built-in kinds are validated by their own
    #: models in shared/catalog/routes.py.
    Options: ClassVar[type[BaseModel]] = PluginOptions
    #: True for kinds that keep their own Deliveries record (sftp, email); the others get one from `deliver_one`.
    records_delivery: ClassVar[bool] = False

    @abstractmethod
    def deliver(self, services: Services, job: Job, ref: Mapping[str, Any], output: Mapping[str, Any],
                dest: Mapping[str, Any]) -> dict[str, Any]:
        """Deliver and return the routed result (kind, target, ...)."""

    @classmethod
    def check_options(cls, dest: Mapping[str, Any]) -> BaseModel:
        """The destination's keys as this kind's Options; ValueError with every problem when they are wrong."""
        keys = {k: v for k, v in dest.items() if k != "kind"}
        try:
            return cls.Options.model_validate(keys)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"destination kind {cls.name!r}: {problems}") from exc


class FunctionDestination(DestinationKind):
    """A kind whose delivery is a function `deliver(services, job, ref, output, dest) -> dict` (deliver_sftp's
    signature); `records_delivery` because such functions keep their own Deliveries record."""

    records_delivery = True
    function: ClassVar[DeliverFunction]

    def deliver(self, services: Services, job: Job, ref: Mapping[str, Any], output: Mapping[str, Any],
                dest: Mapping[str, Any]) -> dict[str, Any]:
        return type(self).function(services, job, ref, output, dest)


K = TypeVar("K", bound=type[DestinationKind])


class DestinationRegistry:
    """Destination kinds by name: classes, or dotted paths (`module:attribute`) imported on first use, so a
    built-in whose dependencies are heavy costs nothing until a route uses it. An attribute that is a function
    (not a DestinationKind) becomes a FunctionDestination."""

    def __init__(self) -> None:
        self._items: dict[str, type[DestinationKind]] = {}
        self._lazy: dict[str, str] = {}
        self._sources: dict[str, str] = {}

    def register(self, name: str, *, source: str = "wharf") -> Callable[[K], K]:
        def decorate(cls: K) -> K:
            self.add(name, cls, source=source)
            return cls
        return decorate

    def add(self, name: str, cls: type[DestinationKind], *, source: str = "wharf") -> None:
        known = self._items.get(name)
        if (known is not None and known is not cls) or name in self._lazy:
            raise ValueError(f"destination kind {name!r} is already registered (by {self.source(name)})")
        cls.name = name
        self._items[name] = cls
        self._sources[name] = source

    def register_path(self, name: str, path: str, *, source: str = "wharf") -> None:
        if name in self._items or name in self._lazy:
            raise ValueError(f"destination kind {name!r} is already registered (by {self.source(name)})")
        self._lazy[name] = path
        self._sources[name] = source

    def source(self, name: str) -> str:
        return self._sources.get(name, "")

    def get(self, name: str) -> type[DestinationKind]:
        if name in self._lazy:
            path = self._lazy.pop(name)
            try:
                self._items[name] = _resolve(name, path)
            except Exception:
                self._lazy[name] = path  # a later use tries again (and says why again)
                raise
        try:
            return self._items[name]
        except KeyError:
            raise UnknownDestinationError(
                f"unknown destination kind {name!r}; known kinds: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted({*self._items, *self._lazy})

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._lazy


def _resolve(name: str, path: str) -> type[DestinationKind]:
    module_name, _, attr = path.partition(":")
    target = getattr(importlib.import_module(module_name), attr)
    if isinstance(target, type) and issubclass(target, DestinationKind):
        target.name = name
        return target
    if callable(target):
        return type(f"{attr}_destination", (FunctionDestination,), {"name": name, "function": staticmethod(target)})
    raise TypeError(f"{path} is neither a DestinationKind nor a delivery function")


DESTINATIONS = DestinationRegistry()


def register(name: str) -> Callable[[K], K]:
    """Class decorator: make a DestinationKind available as `kind: name` in routes."""
    return DESTINATIONS.register(name)


# ---------------------------------------------------------------------------------------------------------
# Built-ins


@register("blob")
class BlobKind(DestinationKind):
    """A copy of the output in a container (shared.services.process._deliver_blob: on_exists, no silent
    overwrite)."""

    def deliver(self, services: Services, job: Job, ref: Mapping[str, Any], output: Mapping[str, Any],
                dest: Mapping[str, Any]) -> dict[str, Any]:
        import time

        from shared.metrics import record_transfer
        from shared.services.process import _deliver_blob

        started = time.monotonic()
        result = _deliver_blob(services, job, ref, output, dest)
        record_transfer(job.partner, "blob", time.monotonic() - started)
        return result


@register("event")
class EventKind(DestinationKind):
    """An event on the configured publisher naming where the file went (runs after the other destinations)."""

    def deliver(self, services: Services, job: Job, ref: Mapping[str, Any], output: Mapping[str, Any],
                dest: Mapping[str, Any]) -> dict[str, Any]:
        from shared.services.process import _deliver_event

        return _deliver_event(services, job, ref, output, dest)


DESTINATIONS.register_path("sftp", "shared.services.deliver:deliver_sftp")
DESTINATIONS.register_path("email", "shared.services.deliver_email:deliver_email")

#: The kinds Wharf itself provides (their catalogue models are in shared/catalog/routes.py).
BUILTIN_KINDS = ("blob", "email", "event", "sftp")


# ---------------------------------------------------------------------------------------------------------
# One delivery, recorded


def deliver_one(services: Services, job: Job, ref: Mapping[str, Any], output: Mapping[str, Any],
                dest: Mapping[str, Any]) -> dict[str, Any]:
    """Deliver through the destination's kind. Kinds without their own record get a Delivery here; a SENT one
    returns its earlier result without delivering again."""
    from shared.plugins import destination_kind

    kind_name = str(dest.get("kind", ""))
    try:
        kind = destination_kind(kind_name)
    except UnknownDestinationError as exc:
        raise ConfigurationError(f"route '{ref.get('route')}': {exc}") from exc
    if kind.records_delivery:
        return kind().deliver(services, job, ref, output, dest)
    index = int(ref.get("index", 0))
    record = _record(services, job, ref, kind_name, index, output)
    fields = log_fields(job.job_id, partner=job.partner, kind=kind_name, index=index)
    with span(f"deliver.{kind_name}", {"wharf.job_id": job.job_id, "wharf.partner": job.partner,
                                       "wharf.destination": kind_name, "wharf.destination.index": index}) as s:
        if record.state is DeliveryState.SENT:
            # SENT but no file.routed (a crash in between): delivered again below, at least once, never lost;
            # the built-in blob kind finds its own blob and reuses it.
            earlier = _routed(services, job.job_id, index)
            if earlier is not None:
                s.set_attribute("wharf.delivery.already_sent", True)
                log.info("delivery already sent; not sent again", extra=fields)
                return {**earlier, "already_sent": True}
        record = _save(services, record, state=DeliveryState.SENDING, attempts=record.attempts + 1, error="")
        try:
            result = kind().deliver(services, job, ref, output, dest)
        except Exception as exc:
            reason = redact(str(exc) or type(exc).__name__)
            _save(services, record, state=DeliveryState.FAILED, error=reason[:2000])
            services.jobs.log(job.job_id, "WARNING", f"{kind_name} delivery {index} failed (attempt "
                                                     f"{record.attempts}): {reason}", trace_id=current_trace_id())
            log.warning("delivery failed: %s", reason, extra=fields)
            raise
        _save(services, record, state=DeliveryState.SENT, sent_at=utcnow(), remote_path=str(result.get("target", "")),
              sha256=str(result.get("sha256") or output.get("sha256", "")),
              bytes=int(result.get("bytes") or output.get("bytes", 0) or 0))
        log.info("delivery sent", extra={**fields, "target": str(result.get("target", ""))})
        return {**result, "delivery": DeliveryState.SENT.value}


def _record(services: Services, job: Job, ref: Mapping[str, Any], kind: str, index: int,
            output: Mapping[str, Any]) -> Delivery:
    try:
        return services.deliveries.get(job.job_id, index)
    except NotFoundError:
        pass
    new = Delivery(job_id=job.job_id, index=index, partner=job.partner, kind=kind, target=kind,
                   route=str(ref.get("route", "")), bytes=int(output.get("bytes", 0) or 0),
                   sha256=str(output.get("sha256", "")), created_at=utcnow(),
                   redelivery_of=ref.get("redelivery_of"))
    try:
        return services.deliveries.create(new)
    except ConflictError:
        return services.deliveries.get(job.job_id, index)


def _save(services: Services, record: Delivery, **changes: Any) -> Delivery:
    return services.deliveries.update(replace(record, **changes))


def _routed(services: Services, job_id: str, index: int) -> dict[str, Any] | None:
    for event in services.jobs.events(job_id):
        if event.type is EventType.ROUTED and event.data.get("index") == index:
            return {k: v for k, v in event.data.items() if k not in ("route", "index")}
    return None


__all__ = ["BUILTIN_KINDS", "DESTINATIONS", "DeliveryNotConfiguredError", "DestinationKind", "DestinationRegistry",
           "FunctionDestination", "PluginOptions", "UnknownDestinationError", "deliver_one",
           "register"]
