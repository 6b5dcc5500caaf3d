"""``python -m devhost``: run function_app.py locally in place of the Functions host."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from devhost.config import ConfigError, load_local_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the DFApp (function_app:app)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve HTTP triggers on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=7071, help="HTTP port (7071)")
    parser.add_argument("--app-dir", default=".", help="folder with function_app.py, host.json, local.settings.json")
    parser.add_argument("--print-spans", action="store_true", help="print OpenTelemetry spans (WHARF_PRINT_SPANS=1)")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for noisy in ("azure.core.pipeline.policies.http_logging_policy", "azure.storage", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger("devhost")
    app_dir = Path(args.app_dir).resolve()
    if args.print_spans:
        os.environ["WHARF_PRINT_SPANS"] = "1"
    try:
        # App settings must be in the environment before the app is imported, as in the worker.
        used = load_local_settings(app_dir)
        log.info("devhost: app settings from %s", used.name if used else "(none: no local.settings*.json)")
        from devhost.host import DevHost

        DevHost(args.app, host=args.host, http_port=args.port, app_dir=app_dir).serve_forever()
    except ConfigError as exc:
        log.error("devhost: %s", exc)
        return 2
    except OSError as exc:
        log.error("devhost: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
