"""devhost: runs the v2-model function app locally in place of the Azure Functions host (python -m devhost)."""
