"""`send_email`: queue an email to the configured SMTP relay; the dispatcher sends it.

The tool never talks SMTP. It checks that a relay is configured (if not, the model is told so
with `email_not_configured` and nothing is queued) and returns an `OutboxEffect` that commits
with the step. Arguments are bounded for guided decoding (FACTS.md), and addresses and the
subject are patterns in the schema itself, so no header can be smuggled in with a line break.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from agent.domain import OutboxEffect, effect_key
from agent.outbox.email import EMAIL_NOT_CONFIGURED
from agent.outbox.settings import OutboxSettings
from agent.tools.base import Tool, ToolArguments, ToolContext, ToolResult

# Deliberately plainer than RFC 5321 (no quoted local parts, no IP literals): what an agent
# should write to is an ordinary mailbox, and anything stranger is better refused.
ADDRESS_PATTERN = r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63}){1,8}$"
Address = Annotated[str, StringConstraints(min_length=3, max_length=254, pattern=ADDRESS_PATTERN)]
Subject = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\r\n]+$")]


class SendEmailArgs(ToolArguments):
    to: list[Address] = Field(min_length=1, max_length=10, description="Recipient addresses.")
    subject: Subject = Field(description="One line.")
    body: str = Field(min_length=1, max_length=2000, description="Plain text.")


def refused(code: str, message: str) -> ToolResult:
    """A refusal the model sees and the step records; nothing is queued."""
    return ToolResult(data={"error": {"code": code, "message": message}})


class SendEmail(Tool[SendEmailArgs]):
    name = "send_email"
    description = (
        "Send a plain-text email. It is queued and sent after this step is recorded; "
        "the result says it was queued, not that it arrived."
    )
    arguments = SendEmailArgs

    def __init__(self, settings: OutboxSettings) -> None:
        self._configured = settings.email_configured

    async def run(self, args: SendEmailArgs, ctx: ToolContext) -> ToolResult:
        if not self._configured:
            return refused(EMAIL_NOT_CONFIGURED, "email is not configured on this appliance")
        to = list(dict.fromkeys(args.to))  # a repeated address gets one copy
        # One effect per call, so it is the step's effect number 0 (`record_step` numbers them).
        key = effect_key(ctx.run_id, ctx.step_number, 0)
        effect = OutboxEffect("email", {"to": to, "subject": args.subject, "body": args.body})
        return ToolResult(
            data={"queued": True, "kind": "email", "to": to, "idempotency_key": key},
            effects=(effect,),
        )
