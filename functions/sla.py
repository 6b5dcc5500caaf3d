"""Timer trigger: every 5 minutes, evaluate the partners' expected-file windows that have closed (the SLA)."""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

from shared.bootstrap import get_services

bp = df.Blueprint()


@bp.function_name("sla_check")
@bp.timer_trigger(arg_name="timer", schedule="30 */5 * * * *", run_on_startup=False, use_monitor=True)
def sla_check(timer: func.TimerRequest) -> None:
    from shared.domain.jobs import utcnow
    from shared.services.sla import check_expectations

    check_expectations(get_services(), now=utcnow())
