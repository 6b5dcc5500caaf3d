"""Timer trigger: every five minutes, read each sender mailbox's inbox for delivery status reports of sent email.

Logic: shared/services/delivery_status.py (imported in the body: cold start, see docs/architecture.md)."""

import azure.functions as func

from shared.bootstrap import get_services

bp = func.Blueprint()


@bp.function_name("delivery_status_check")
@bp.timer_trigger(arg_name="timer", schedule="30 */5 * * * *", run_on_startup=False, use_monitor=True)
def delivery_status_check(timer: func.TimerRequest) -> None:
    from shared.services.delivery_status import check_delivery_status

    check_delivery_status(get_services())
