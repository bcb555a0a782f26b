"""Policy files that several tests apply, in tests/policy and tests/faults: one text each, so a
rule the assertions name (its name, its reason) is written in one place. A policy only one test
module uses stays in that module."""

from __future__ import annotations

DENY_HTTP = '[tools]\ndeny = ["http_request"]\n'
EXTERNAL_EMAIL = """
[[rules]]
name = "external-email"
tools = ["send_email"]
effect = "require_approval"
reason = "email leaving acme.com needs a human"
when = [{ arg = "to", part = "domain", not_in = ["acme.com"] }]
"""


def gated_orders(host: str) -> str:
    """Egress to `host` only, and every HTTP request held for a buyer's approval."""
    return f"""
[egress]
allow_hosts = ["{host}"]

[[rules]]
name = "orders"
tools = ["http_request"]
effect = "require_approval"
reason = "orders need a buyer's approval"
"""
