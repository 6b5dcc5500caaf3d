"""Sweep step: jobs a crash left without a visible projection (events stored, IntegrationJob missing or behind)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.observability.tracing import log_fields, span

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

#: How far back a sweep looks: jobs are created at claim time, and a crashed claim is taken over after its
#: lease (10 min), so an hour covers a poll that crashed and a file that vanished before anyone took it over.
REPAIR_WINDOW = timedelta(hours=1)


def repair_recent_jobs(services: Services, *, now: datetime, window: timedelta = REPAIR_WINDOW) -> list[str]:
    """Re-fold the projection of every job created in the last `window` whose IntegrationJob row is missing or
    behind its events; returns their ids. The next poll's take-over repairs the same jobs as it re-records their
    files; this catches the file that vanished from the source after the crash, so no poll comes back to it."""
    with span("jobs.repair_recent", {"wharf.window_seconds": window.total_seconds()}) as s:
        repaired = services.jobs.repair_projections(since=now - window)
        s.set_attribute("wharf.repaired", len(repaired))
        for job_id in repaired:
            log.warning("job was invisible after a crash: projection repaired", extra=log_fields(job_id))
        return repaired
