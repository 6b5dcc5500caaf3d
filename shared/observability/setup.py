"""Start-up of telemetry: configure the SDK pipeline once per process, flush it, or capture it in tests.

The top of shared.observability: it loads the OpenTelemetry SDK (shared.observability.sdk), so callers on the
cold-start path (bootstrap, the CLI) import it inside the function that configures telemetry.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from shared.observability import sdk
from shared.observability.redaction import register_settings_secrets
from shared.observability.sdk import Mode, TelemetryCapture

_config_lock = threading.Lock()
_configured_mode: Mode | None = None


def configure_telemetry(settings: Any = None, *, force: bool = False,
                        env: Mapping[str, str] | None = None) -> Mode:
    """Configure tracing, metrics and logging once per process; returns the mode chosen.

    `azure_monitor` when APPLICATIONINSIGHTS_CONNECTION_STRING is set, else `otlp` when
    OTEL_EXPORTER_OTLP_ENDPOINT is set, else `console` when WHARF_PRINT_SPANS=1, else `none` (an SDK tracer
    provider is still installed: trace ids must exist and flow through queues even when nothing is exported).
    WHARF_PRINT_SPANS=1 also prints spans in the other modes. `settings` (shared.settings.Settings) supplies the
    connection string and endpoint; everything else comes from `env` (default: os.environ).
    Telemetry never stops the app: a failing exporter set-up is logged and degrades to `none`.
    """
    global _configured_mode
    with _config_lock:
        if _configured_mode is not None and not force:
            return _configured_mode
        if settings is not None:
            register_settings_secrets(settings)
        _configured_mode = sdk.install(sdk.TelemetryConfig.from_settings(settings, env))
        return _configured_mode


def configured_mode() -> Mode | None:
    """The mode `configure_telemetry` chose in this process, None before it ran."""
    return _configured_mode


def flush(timeout_millis: int = 5000) -> None:
    """Export what is buffered (spans, metrics, logs): devhost at exit, tests, before a process freezes."""
    sdk.flush(timeout_millis)


def for_tests() -> TelemetryCapture:
    """In-memory spans, metrics and logs for tests; one process-wide SDK pipeline, cleared at each call.

    OpenTelemetry's global providers are set once per process (`trace._TRACER_PROVIDER_SET_ONCE`; a second
    `set_tracer_provider` is ignored with a warning), so the first call installs Wharf's SDK providers with
    exporter slots and later calls only swap/clear the in-memory exporters behind them.
    """
    return sdk.capture()
