"""The OpenAPI 3.1 description of koe's HTTP API (`document.openapi_routes()`), with its schemas in `_schemas`."""
