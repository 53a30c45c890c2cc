"""A full tool-call round trip: the model asks for a tool, we run it, it answers.

python examples/tool_calling.py
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from _emulator_fallback import backend

from aiotongyi import TongyiLLMClient
from aiotongyi.testing import Reply, ToolCallScript

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "e.g. Hangzhou"}},
                "required": ["city"],
            },
        },
    }
]


def get_weather(city: str) -> dict[str, Any]:
    """Our "tool": a real app would call a weather service here."""
    return {"city": city, "condition": "sunny", "temperature_c": 24}


async def main() -> None:
    api_key, base_url, emulator = backend()
    if emulator is not None:  # the emulator only answers what it is told to
        emulator.enqueue(
            Reply(tool_calls=[ToolCallScript("get_weather", ['{"city": ', '"Hangzhou"}'])]),
            Reply(text=["It is sunny ", "and 24 °C in Hangzhou."]),
        )
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "What's the weather in Hangzhou?"}
    ]
    async with TongyiLLMClient(model="qwen-plus", api_key=api_key, base_url=base_url) as client:
        output = await client.generate(messages, tools=TOOLS)
        while output.finish_reason == "tool_calls":
            messages.append(output.to_message())  # the assistant turn, with its tool_calls
            for call in output.tool_calls:
                result = get_weather(**json.loads(call.arguments))
                print(f"tool call: {call.name}({call.arguments}) -> {result}")
                messages.append(
                    {
                        "role": "tool",
                        "content": json.dumps(result, ensure_ascii=False),
                        "tool_call_id": call.id,
                    }
                )
            output = await client.generate(messages, tools=TOOLS)  # re-send the tools
    print(f"answer: {output.text}")


if __name__ == "__main__":
    asyncio.run(main())
