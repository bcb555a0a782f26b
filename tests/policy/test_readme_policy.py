"""The policy file shown in README's "Policies and approvals" section is valid and means what the
text says it means."""

from __future__ import annotations

import re
from pathlib import Path

from agent.policy.compiled import compile_document
from agent.policy.evaluators import NO_CONTEXT, EvaluationContext, ProposedAction
from agent.policy.file import parse_policy

ROOT = Path(__file__).resolve().parents[2]


def test_readme_policy_parses_and_decides() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Policies and approvals") :]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    policy = compile_document(parse_policy(block.group(1), name="README.md"))
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
