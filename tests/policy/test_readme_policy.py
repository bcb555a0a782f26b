"""The policy file shown in README's "Policies and approvals" section is valid and means what the
text says it means."""

from __future__ import annotations

import re
from pathlib import Path

from agent.policy.compiled import CompiledPolicy, compile_document
from agent.policy.evaluators import NO_CONTEXT, EvaluationContext, ProposedAction
from agent.policy.file import parse_policy

ROOT = Path(__file__).resolve().parents[2]


def readme_policy() -> CompiledPolicy:
    """The policy file in README's "Policies and approvals" section, compiled."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Policies and approvals") :]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    return compile_document(parse_policy(block.group(1), name="README.md"))


def test_readme_policy_parses_and_decides() -> None:
    policy = readme_policy()
    external = ProposedAction("send_email", {"to": ["eve@partner.example"], "subject": "s"})
    assert policy.chain.evaluate(external, NO_CONTEXT).kind == "require_approval"
    internal = ProposedAction("send_email", {"to": ["ann@acme.com"], "subject": "s"})
    assert policy.chain.evaluate(internal, NO_CONTEXT).kind == "allow"
    tainted = EvaluationContext(untrusted=frozenset({"to"}))
    assert policy.chain.evaluate(internal, tainted).rule == "provenance.when_untrusted"
    http = ProposedAction("http_request", {"url": "https://hooks.acme.internal/x"})
    assert policy.chain.evaluate(http, NO_CONTEXT).rule == "tools.deny"
    assert policy.search_tags == frozenset({"public"})
    assert policy.ttl_s == 3600


def test_the_readme_policy_holds_a_view_rule_that_means_what_it_says() -> None:
    policy = readme_policy()
    call = ProposedAction("sql_query", {"sql": "select * from payroll"})
    payroll = policy.chain.evaluate(call, EvaluationContext(views=("payroll",)))
    assert (payroll.kind, payroll.rule) == ("require_approval", "payroll")
    assert policy.chain.evaluate(call, EvaluationContext(views=("orders",))).kind == "allow"
