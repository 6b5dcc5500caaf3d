"""The versioned HTTP API (/api/v1): routes, pydantic models, auth, problem details and the OpenAPI document.

Independent of azure.functions: functions/api_v1.py turns a host request into an ApiRequest and back."""
