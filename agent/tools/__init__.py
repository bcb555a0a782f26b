"""The tools an agent may be allowed to call, by name.

Some tools need configuration (the SMTP relay, the HTTP allow-list), so the set is built from
settings at the composition root (`build_tools`); `TOOL_NAMES` is what an agent definition may
name, whatever is configured: an unconfigured tool refuses at decision time with a code the
model and the step record both see.
"""

from __future__ import annotations

from typing import Any

from agent.outbox.settings import OutboxSettings
from agent.tools.base import Tool, ToolContext, ToolResult
from agent.tools.finish import Finish
from agent.tools.http_request import HttpRequest
from agent.tools.search_documents import SearchDocuments
from agent.tools.send_email import SendEmail

DEFAULT_TOOLS = ("search_documents", "finish")
TOOL_NAMES = frozenset({SearchDocuments.name, Finish.name, SendEmail.name, HttpRequest.name})


def build_tools(outbox: OutboxSettings) -> dict[str, Tool[Any]]:
    tools: list[Tool[Any]] = [
        SearchDocuments(),
        Finish(),
        SendEmail(outbox),
        HttpRequest(outbox),
    ]
    return {t.name: t for t in tools}


__all__ = [
    "DEFAULT_TOOLS",
    "TOOL_NAMES",
    "Tool",
    "ToolContext",
    "ToolResult",
    "build_tools",
]
