"""Telemetry, one way up: redaction <- tracing <- logs <- sdk <- setup (a module imports only those before it)."""
