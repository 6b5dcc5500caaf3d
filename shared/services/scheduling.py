"""Scheduling: which partners' cron is due this minute; enqueue one poll request each; run a request."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.domain.errors import ConfigurationError
from shared.domain.messages import Channel, PollRequest
from shared.observability.tracing import log_fields, span

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.catalog import Catalog, Partner

log = logging.getLogger(__name__)

TICK = timedelta(minutes=1)


def _source(partner: Partner, channel: Channel) -> Any:
    return partner.sftp if channel == "sftp" else partner.mailbox


def is_due(schedule: str, now: datetime, *, tick: timedelta = TICK) -> bool:
    """Whether a 6-field (NCRONTAB, seconds first) or 5-field cron fires in the tick that ends at `now`.

    The timer runs every minute; `now` is floored to the minute so a late or early timer still looks at
    (previous minute, this minute]: every fire time belongs to exactly one tick.
    """
    from shared.catalog import next_run  # the catalogue (PyYAML, croniter) loads on first use, not at import

    end = now.astimezone(UTC).replace(second=0, microsecond=0)
    return next_run(schedule, end - tick) <= end


def due_partners(catalog: Catalog, now: datetime, *, channel: Channel = "sftp") -> list[Partner]:
    """Enabled partners with a source on `channel` whose schedule is due at `now`."""
    partners = catalog.sftp_partners() if channel == "sftp" else catalog.mailbox_partners()
    return [p for p in partners if is_due(_source(p, channel).schedule, now)]


def schedule_polls(services: Services, *, now: datetime, channel: Channel = "sftp") -> list[str]:
    """Enqueue a PollRequest for every due partner (the timer only enqueues; queue workers poll, so one
    slow partner never delays another). Returns the partner ids."""
    with span("schedule.polls", {"wharf.channel": channel}) as s:
        due = due_partners(services.catalog, now, channel=channel)
        for partner in due:
            request = PollRequest(partner=partner.id, channel=channel, requested_by="timer", requested_at=now)
            services.queues.send(services.settings.poll_queue, request.to_message())
            log.info("poll requested", extra=log_fields(partner=partner.id, channel=channel))
        s.set_attribute("wharf.due", len(due))
        return [p.id for p in due]


def request_poll(services: Services, partner_id: str, *, requested_by: str, now: datetime,
                 channel: Channel | None = None) -> PollRequest:
    """Validate and enqueue an on-demand poll (HTTP API). Raises NotFoundError / ConfigurationError."""
    request = PollRequest(partner=partner_id, channel=poll_channel(services, partner_id, channel),
                          requested_by=requested_by, requested_at=now)
    services.queues.send(services.settings.poll_queue, request.to_message())
    return request


def poll_channel(services: Services, partner_id: str, channel: str | None = None) -> Channel:
    """The channel to poll: the one asked for, else the partner's only source (sftp first)."""
    partner = services.catalog.get(partner_id)
    if channel is None:
        channel = "sftp" if partner.sftp is not None or partner.mailbox is None else "mail"
    if channel == "sftp" and partner.sftp is not None:
        if not partner.sftp.polled:
            raise ConfigurationError(f"partner {partner_id} has no sftp.remote_dirs to poll (Wharf only delivers "
                                     "to it)")
        return "sftp"
    if channel == "mail" and partner.mailbox is not None:
        return "mail"
    raise ConfigurationError(f"partner {partner_id} has no {channel} source in the catalogue")


def poller(channel: str) -> Callable[..., Any]:
    """The use case that polls a channel: poll_sftp.poll_partner, or poll_mailbox.poll_partner."""
    module = {"sftp": "shared.services.poll_sftp", "mail": "shared.services.poll_mailbox"}.get(channel)
    if module is None:
        raise ConfigurationError(f"unknown channel {channel!r}")
    try:
        found: Callable[..., Any] = importlib.import_module(module).poll_partner
        return found
    except ModuleNotFoundError as exc:
        raise ConfigurationError(f"polling the {channel} channel is not available in this build") from exc


def run_poll_request(services: Services, request: PollRequest, *, scale_out: bool = False, **kwargs: Any) -> Any:
    """What the poll worker does with one message: poll that partner's channel now.

    `scale_out` (the queue worker): an SFTP listing with more than WHARF_TRANSFER_BATCH_FILES files to take is
    claimed in batches put on the transfer-batches queue, for every instance's worker to share."""
    if scale_out and request.channel == "sftp" and "options" not in kwargs:
        from shared.services.polls import default_options

        kwargs["options"] = default_options(services, batch_files=services.settings.transfer_batch_files)
    return poller(request.channel)(services, request.partner, requested_by=request.requested_by, **kwargs)
