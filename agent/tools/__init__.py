"""The tools an agent may be allowed to call, by name."""

from __future__ import annotations

from typing import Any

from agent.tools.base import Tool, ToolContext, ToolResult
from agent.tools.finish import Finish
from agent.tools.search_documents import SearchDocuments

BUILTIN_TOOLS: dict[str, Tool[Any]] = {t.name: t for t in (SearchDocuments(), Finish())}
DEFAULT_TOOLS = ("search_documents", "finish")

__all__ = ["BUILTIN_TOOLS", "DEFAULT_TOOLS", "Tool", "ToolContext", "ToolResult"]
