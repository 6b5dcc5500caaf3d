"""Timer trigger: once a day, how long each secret the catalogue references has left (#18).

Records the gauge `wharf.secret.expires_in_days` {secret} and a warning per secret missing or expiring within
WHARF_SECRET_EXPIRY_WARN_DAYS, for an alert rule to fire on. Logic: shared/services/secrets_check.py (imported
in the body: cold start, see docs/architecture.md).
"""

import azure.functions as func

from shared.bootstrap import get_services

bp = func.Blueprint()


@bp.function_name("secrets_expiry")
@bp.timer_trigger(arg_name="timer", schedule="0 0 6 * * *", run_on_startup=False, use_monitor=True)
def secrets_expiry(timer: func.TimerRequest) -> None:
    from shared.services.secrets_check import record_expiry

    record_expiry(get_services())
