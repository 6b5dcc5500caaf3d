"""The whole app in devhost, in a process of its own, exporting to Azure Monitor (for test_appinsights_envelopes).

Azure Monitor must be the first telemetry set-up in a process, and the test process has its own pipeline, so the
app runs here: `python -m tests.e2e.appinsights_host` with the app settings in the environment and the devhost
options in WHARF_TEST_DEVHOST (JSON). Prints `READY <http url>` once serving; stops, flushes the exporters and
exits when stdin closes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> int:
    from devhost.host import DevHost
    from shared.observability import setup

    options = json.loads(os.environ.pop("WHARF_TEST_DEVHOST"))
    import function_app

    host = DevHost(function_app.app, http_port=0, enable_timers=False, blob_poll_interval=0.5,
                   app_dir=Path(__file__).resolve().parents[2], blob_containers=options["blob_containers"],
                   event_grid_blobs=options["event_grid_blobs"],
                   host_json_overrides={"extensions": {"queues": {"maxPollingInterval": "00:00:00.500"}}})
    host.start()
    try:
        from shared.bootstrap import get_services

        get_services().ensure_resources()  # this run's tables and queues
        print(f"READY {host.http_url}", flush=True)
        sys.stdin.read()  # the test closes stdin when it is done
        host.wait_idle(30)
    finally:
        host.stop()
        setup.flush(10_000)
    print("STOPPED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
