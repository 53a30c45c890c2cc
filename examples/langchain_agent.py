"""A LangChain agent loop on aiotongyi's ChatTongyi, async and sync, plus structured output.

The model gets two tools; our loop runs the calls it asks for and feeds the
results back until it answers in text. No LangGraph, just a few lines.

pip install 'aiotongyi[langchain]'
python examples/langchain_agent.py
"""

from __future__ import annotations

import asyncio
import json

from _emulator_fallback import backend
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.tools import BaseTool, tool
from pydantic import BaseModel, Field

from aiotongyi.integrations.langchain import ChatTongyi


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return json.dumps({"city": city, "condition": "sunny", "temperature_c": 24})


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


TOOLS: dict[str, BaseTool] = {t.name: t for t in (get_weather, add)}


class CityFact(BaseModel):
    """One fact about a city."""

    city: str = Field(description="the city's name")
    fact: str = Field(description="something worth knowing about it")


def run_calls(answer: AIMessage, history: list[BaseMessage]) -> None:
    history.append(answer)
    for call in answer.tool_calls:
        print(f"tool call: {call['name']}({json.dumps(call['args'], ensure_ascii=False)})")
        history.append(TOOLS[call["name"]].invoke(call))


async def ask_async(llm: ChatTongyi, question: str) -> str:
    bound = llm.bind_tools(list(TOOLS.values()))
    history: list[BaseMessage] = [HumanMessage(question)]
    for _ in range(5):  # a bound on the rounds, as any agent loop should have
        answer: AIMessageChunk | None = None
        async for chunk in bound.astream(history):
            answer = chunk if answer is None else answer + chunk
        assert answer is not None
        if not answer.tool_calls:
            return answer.text
        run_calls(answer, history)
    return "(no answer after 5 rounds)"


def ask_sync(llm: ChatTongyi, question: str) -> str:
    bound = llm.bind_tools(list(TOOLS.values()))
    history: list[BaseMessage] = [HumanMessage(question)]
    for _ in range(5):
        answer: AIMessageChunk | None = None
        for chunk in bound.stream(history):
            answer = chunk if answer is None else answer + chunk
        assert answer is not None
        if not answer.tool_calls:
            return answer.text
        run_calls(answer, history)
    return "(no answer after 5 rounds)"


def main() -> None:
    api_key, base_url, _ = backend()
    llm = ChatTongyi(model="qwen-plus", api_key=api_key, base_url=base_url)
    print("answer:", asyncio.run(ask_async(llm, "What is the weather in Hangzhou?")))
    print("answer:", ask_sync(llm, "Use the add tool: what is 19 + 23?"))
    fact = llm.with_structured_output(CityFact).invoke("Tell me about Suzhou.")
    print(f"structured: {fact!r}")


if __name__ == "__main__":
    main()
