"""Timer trigger: every minute, enqueue a poll request (channel "mail") for each mailbox partner that is due."""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

from shared.bootstrap import get_services

bp = df.Blueprint()


@bp.function_name("mail_schedule")
@bp.timer_trigger(arg_name="timer", schedule="0 * * * * *", run_on_startup=False, use_monitor=True)
def mail_schedule(timer: func.TimerRequest) -> None:
    from shared.domain.jobs import utcnow
    from shared.services.scheduling import schedule_polls

    schedule_polls(get_services(), now=utcnow(), channel="mail")
