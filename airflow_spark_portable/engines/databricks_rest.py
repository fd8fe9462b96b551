"""The Databricks REST calls the databricks provider's hook has no public method for.

``DatabricksHook`` has public methods for the runs this engine submits (``submit_run``,
``get_run``, ``get_run_output``, ``cancel_run``, ``get_run_page_url``) and the engine uses
them. It has none for workspace files, ``jobs/runs/list``, the caller's identity (SCIM
``Me``) or folder permissions, so those go through :func:`call`: the one place this package
uses the hook's private ``_do_api_call``, which gives them the hook's authentication (token,
service principal OAuth, Azure AD), retries and connection settings. ``_do_api_call`` has had
the same shape from provider 7.7.1 (this package's floor) to today; both are tested
(``tests/test_databricks_rest.py``).

Errors are matched by Databricks' ``error_code`` (``RESOURCE_DOES_NOT_EXIST``,
``RESOURCE_ALREADY_EXISTS``, ``PERMISSION_DENIED``...), never by message text: the hook puts
the response body into its exception as ``Response: <body>, Status Code: <n>``; :func:`call`
parses it back into :class:`DatabricksError`.
"""

from __future__ import annotations

import json
import re
from typing import Any

# "Response: {...}, Status Code: 404": the hook's wording for HTTP errors (7.7.1 .. 7.23)
_HTTP_ERROR = re.compile(r"Response: (?P<body>.*), Status Code: (?P<status>\d{3})\s*$", re.DOTALL)


class DatabricksError(Exception):
    """A Databricks API error: ``code`` is the response's ``error_code`` (``HTTP_<status>``
    when the body has none), ``status`` the HTTP status."""

    def __init__(self, code: str, status: int, message: str, endpoint: str) -> None:
        super().__init__(f"{endpoint}: {code} (HTTP {status}): {message}")
        self.code, self.status, self.message, self.endpoint = code, status, message, endpoint


def call(hook, method: str, endpoint: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """``method`` (GET, POST, PATCH, DELETE: what the hook sends) ``/api/<endpoint>`` with
    ``body`` (the query string for GET) and return the JSON response.

    Raises :class:`DatabricksError` for an HTTP error response; the hook's own exceptions
    (retries exhausted, connection not found) pass through unchanged."""
    try:
        return hook._do_api_call((method, endpoint), body or {})
    except Exception as exc:
        error = error_of(exc, endpoint)
        if error is None:
            raise
        raise error from None


def error_of(exc: BaseException, endpoint: str) -> DatabricksError | None:
    """The Databricks error in an exception the hook raised (its public methods too), or
    None when it was not an HTTP error response."""
    match = _HTTP_ERROR.search(str(exc))
    if match is None:
        return None
    status = int(match["status"])
    try:
        payload = json.loads(match["body"])
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    code = str(payload.get("error_code") or f"HTTP_{status}")
    message = str(payload.get("message") or match["body"][:300])
    return DatabricksError(code, status, message, endpoint)


def current_identity(hook) -> str:
    """The name the connection acts as: a user's ``userName`` (their email) or a service
    principal's application id, which is also the name of its home folder ``/Users/<name>``."""
    me = call(hook, "GET", "2.0/preview/scim/v2/Me")
    name = me.get("userName") or me.get("applicationId")
    if not name:
        raise DatabricksError("NO_IDENTITY", 200, f"SCIM Me returned no userName: {sorted(me)}", "scim/v2/Me")
    return str(name)


def list_active_submit_runs(hook) -> list[dict[str, Any]]:
    """Every active one-time run (``runs/submit``) the caller can see, all pages."""
    runs, offset = [], 0
    while True:
        body = {"active_only": "true", "run_type": "SUBMIT_RUN", "limit": 25, "offset": offset}
        page = call(hook, "GET", "2.1/jobs/runs/list", body)
        runs += page.get("runs", [])
        if not page.get("has_more"):
            return runs
        offset += len(page.get("runs", [])) or 25
