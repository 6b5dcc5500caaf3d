"""Timer trigger: every 5 minutes, re-send, complete or fail the jobs no orchestration will finish.

No `from __future__ import annotations`, as in functions/intake.py: the worker reads the parameter types of
a function with a durable client binding.
"""

import azure.durable_functions as df
import azure.functions as func

from shared.bootstrap import get_services

bp = df.Blueprint()


@bp.function_name("jobs_sweep")
@bp.timer_trigger(arg_name="timer", schedule="0 */5 * * * *", run_on_startup=False, use_monitor=True)
@bp.durable_client_input(client_name="client")
async def jobs_sweep(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    from shared.domain.jobs import utcnow
    from shared.services.poison import record_poison_depths
    from shared.services.sweep import sweep_jobs

    services = get_services()
    try:
        await sweep_jobs(services, client, now=utcnow())
    finally:
        record_poison_depths(services)  # the gauge wharf.queue.poison_depth an alert watches, every 5 minutes
