"""`finish`: the agent's final answer, which ends the run successfully."""

from __future__ import annotations

from pydantic import Field

from agent.tools.base import Tool, ToolArguments, ToolContext, ToolResult


class FinishArgs(ToolArguments):
    # Bounded so that guided decoding cannot ramble past max_tokens (FACTS.md): 1,000 characters
    # took the bundled 270M model 259 tokens with the JSON around them, inside the default 384
    # (`decision_max_tokens`); at 2,000 it rambled until cut and the demo run failed.
    answer: str = Field(min_length=1, max_length=1000, description="The final answer.")


class Finish(Tool[FinishArgs]):
    name = "finish"
    description = "Give the final answer to the task. Use it once you can answer."
    arguments = FinishArgs

    async def run(self, args: FinishArgs, ctx: ToolContext) -> ToolResult:
        return ToolResult(data={"answer": args.answer}, final_answer=args.answer)
