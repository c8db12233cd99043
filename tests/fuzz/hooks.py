"""Schemathesis checks for CodeKraft's GraphQL API: GraphQL errors with a code are fine (bad
input, not found, limits); a 5xx response or an INTERNAL error is a bug."""

import schemathesis


@schemathesis.check
def no_server_errors(response, case):
    if response.status_code >= 500:
        raise AssertionError(f"HTTP {response.status_code}: {response.text[:500]}")
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"not JSON: {response.text[:500]}")
    for error in body.get("errors") or []:
        code = (error.get("extensions") or {}).get("code")
        if code is None or code == "INTERNAL":
            raise AssertionError(f"error without a public code: {error}")
