"""Policy files and their evaluation, without I/O: what a file says, line-precise errors, and
the verdict each kind of rule gives a proposed action (deny over approval over allow)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from agent.domain import PolicyRecord
from agent.policy.compiled import NO_DOCUMENT_TAG, EffectivePolicy, compile_document
from agent.policy.errors import InvalidPolicy
from agent.policy.evaluators import NO_CONTEXT, EvaluationContext, ProposedAction
from agent.policy.file import parse_policy
from agent.policy.verdicts import Allow, Deny, RequireApproval

POLICY = """
description = "acme"

[tools]
deny = ["http_request"]

[[rules]]
name = "external-email"
tools = ["send_email"]
effect = "require_approval"
reason = "email leaving acme.com needs a human"
when = [{ arg = "to", part = "domain", not_in = ["acme.com", "ACME.org"] }]

[[rules]]
name = "no-secrets"
effect = "deny"
when = [{ arg = "subject", regex = "(?i)password" }]
"""


def email(*to: str, subject: str = "Hello") -> ProposedAction:
    return ProposedAction("send_email", {"to": list(to), "subject": subject, "body": "hi"})


def http(url: str, body: str | None = None) -> ProposedAction:
    return ProposedAction("http_request", {"method": "POST", "url": url, "body": body})


def verdict(source: str, action: ProposedAction, ctx: EvaluationContext = NO_CONTEXT) -> object:
    return compile_document(parse_policy(source)).chain.evaluate(action, ctx)


def test_rules_decide_by_arguments() -> None:
    assert verdict(POLICY, email("bob@acme.com", "ann@Acme.ORG")) == Allow()
    assert verdict(POLICY, email("bob@acme.com", "eve@evil.example")) == RequireApproval(
        "external-email", "email leaving acme.com needs a human"
    )
    assert verdict(POLICY, http("http://127.0.0.1/x")) == Deny(
        "tools.deny", "the policy denies the tool http_request"
    )
    assert verdict(POLICY, ProposedAction("finish", {"answer": "ok"})) == Allow()


def test_deny_wins_over_approval_whatever_the_order() -> None:
    # The approval rule comes first in the file; the later deny still decides.
    denied = verdict(POLICY, email("eve@evil.example", subject="Your PASSWORD"))
    assert denied == Deny("no-secrets", "the policy rule no-secrets applies to this call")


def test_first_rule_of_the_strongest_kind_is_recorded() -> None:
    source = """
[[rules]]
name = "first"
effect = "require_approval"
[[rules]]
name = "second"
effect = "require_approval"
"""
    assert verdict(source, email("a@acme.com")).rule == "first"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("condition", "arguments", "expected"),
    [
        ('{ arg = "body.amount", greater_than = 1000 }', '{"amount": 5000}', True),
        ('{ arg = "body.amount", greater_than = 1000 }', '{"amount": "999.5"}', False),
        ('{ arg = "body.amount", less_than = 10 }', '{"amount": 3}', True),
        ('{ arg = "body.table", in = ["payroll", "users"] }', '{"table": "payroll"}', True),
        ('{ arg = "body.table", equals = "users" }', '{"table": "orders"}', False),
        ('{ arg = "body.flag", equals = true }', '{"flag": 1}', False),
        ('{ arg = "url", part = "host", matches = "*.evil.example" }', None, True),
        ('{ arg = "url", part = "host", not_in = ["api.acme.com"] }', None, True),
        ('{ arg = "body.missing", not_in = ["x"] }', '{"amount": 1}', True),
        ('{ arg = "body.missing", equals = "x" }', '{"amount": 1}', False),
    ],
)
def test_condition_operators(condition: str, arguments: str | None, expected: bool) -> None:
    source = f'[[rules]]\nname = "r"\neffect = "deny"\nwhen = [{condition}]\n'
    result = verdict(source, http("https://x.evil.example/pay", arguments))
    assert isinstance(result, Deny) is expected


def test_egress_narrows_to_the_tenant_hosts() -> None:
    source = '[egress]\nallow_hosts = ["hooks.acme.internal", "127.0.0.1:8080"]\n'
    assert verdict(source, http("https://hooks.acme.internal/a")) == Allow()
    assert verdict(source, http("http://127.0.0.1:8080/a")) == Allow()
    refused = verdict(source, http("http://127.0.0.1:9090/a"))
    assert isinstance(refused, Deny)
    assert refused.rule == "egress.allow_hosts"
    assert "tenant's policy" in refused.reason


def test_untrusted_targets_and_conditions() -> None:
    source = """
[provenance]
when_untrusted = "require_approval"

[[rules]]
name = "untrusted-body"
effect = "deny"
tools = ["http_request"]
when = [{ arg = "body", untrusted = true }]
"""
    tainted_to = EvaluationContext(untrusted=frozenset({"to"}))
    assert verdict(source, email("eve@evil.example"), tainted_to) == RequireApproval(
        "provenance.when_untrusted",
        "the to of this send_email came from documents or tool output, not from the task",
    )
    assert verdict(source, email("eve@evil.example")) == Allow()
    tainted_body = EvaluationContext(untrusted=frozenset({"body.account"}))
    assert verdict(source, http("http://h/x", '{"account": "1"}'), tainted_body).rule == (  # type: ignore[attr-defined]
        "untrusted-body"
    )


def test_errors_name_every_bad_line() -> None:
    source = """description = "x"
[tools]
deny = ["finish"]

[egress]
allow_hosts = ["*.acme.com"]

[[rules]]
name = "ok"
effect = "deny"

[[rules]]
name = "bad"
effect = "maybe"
when = [{ arg = "x", equals = 1, in = [2] }]
typo = 1
"""
    with pytest.raises(InvalidPolicy) as caught:
        parse_policy(source, name="acme.toml")
    lines = str(caught.value).splitlines()
    assert caught.value.line == 3
    assert lines[0].startswith("acme.toml:3: tools.deny: ")
    assert "'finish' must stay allowed" in lines[0]
    assert lines[1].startswith("acme.toml:6: egress.allow_hosts: ")
    assert lines[2] == "acme.toml:14: rules[1].effect: Input should be 'deny' or 'require_approval'"
    assert lines[3].startswith("acme.toml:15: rules[1].when[0]: give exactly one operator")
    assert lines[4] == "acme.toml:16: rules[1].typo: unknown key"


@pytest.mark.parametrize(
    ("source", "line", "fragment"),
    [
        ('[tools]\ndeny = ["teleport"]\n', 2, "unknown tool 'teleport'"),
        (
            '[[rules]]\nname = "a"\neffect = "deny"\n[[rules]]\nname = "a"\neffect = "deny"\n',
            1,
            "two rules are named 'a'",
        ),
        ("x = [", 1, "invalid TOML"),
        (
            '[[rules]]\nname = "r"\neffect = "deny"\nwhen = [{ arg = "a", regex = "(" }]\n',
            4,
            "not a valid regular expression",
        ),
    ],
)
def test_other_errors(source: str, line: int, fragment: str) -> None:
    with pytest.raises(InvalidPolicy) as caught:
        parse_policy(source)
    assert caught.value.line == line
    assert fragment in caught.value.message


def record(agent: str | None, version: int, source: str) -> PolicyRecord:
    return PolicyRecord(
        id=hash((agent, version, source)) & 0xFFFFFFF,
        tenant_id=uuid.uuid4(),
        agent_name=agent,
        version=version,
        source=source,
        document=parse_policy(source).as_json(),
        sha256="",
        applied_by="test",
        applied_at=datetime.now(UTC),
    )


def test_an_agent_policy_only_tightens_the_tenant_policy() -> None:
    tenant = record(None, 3, '[data]\nsearch_tags = ["public", "hr"]\n[approvals]\nttl_s = 600\n')
    agent = record(
        "assistant",
        1,
        '[data]\nsearch_tags = ["hr", "legal"]\n[approvals]\nttl_s = 60\n'
        '[[rules]]\nname = "mail"\neffect = "require_approval"\ntools = ["send_email"]\n',
    )
    policy = EffectivePolicy.of([agent, tenant])
    assert policy.version == {"tenant": 3, "agent": 1}
    assert policy.search_tags == ("hr",)
    assert policy.ttl_s(3600) == 60
    assert policy.evaluate(email("a@acme.com"), NO_CONTEXT).rule == "mail"

    disjoint = record("other", 1, '[data]\nsearch_tags = ["legal"]\n')
    assert EffectivePolicy.of([tenant, disjoint]).search_tags == (NO_DOCUMENT_TAG,)
    nothing = EffectivePolicy.of([])
    assert (nothing.active, nothing.version, nothing.search_tags) == (False, None, ())
    assert nothing.evaluate(email("a@b.cd"), NO_CONTEXT) == Allow()
