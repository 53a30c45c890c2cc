"""Tools from plain typed functions: aiotongyi.tool() and one run_tool_calls() per round.

python examples/tool_functions.py
"""

from __future__ import annotations

import asyncio
from typing import Literal

from _emulator_fallback import backend

from aiotongyi import TongyiLLMClient, run_tool_calls, tool
from aiotongyi.testing import Reply, ToolCallScript


def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> dict[str, object]:
    """Current weather in a city.

    :param city: the city's name, e.g. Hangzhou.
    :param unit: the temperature scale.
    """
    return {"city": city, "condition": "sunny", "temperature": 24, "unit": unit}


async def local_time(city: str) -> str:
    """The local time in a city.

    :param city: the city's name.
    """
    await asyncio.sleep(0)  # a real tool would await a service here
    return f"14:05 in {city}"


TOOLS = [tool(get_weather), tool(local_time)]


async def main() -> None:
    api_key, base_url, emulator = backend()
    if emulator is not None:  # scripted: the first answer asks for both tools
        emulator.enqueue(
            Reply(
                tool_calls=[
                    ToolCallScript("get_weather", '{"city": "Hangzhou"}'),
                    ToolCallScript("local_time", '{"city": "Hangzhou"}'),
                ]
            ),
            Reply(text=["It is 14:05 in Hangzhou, sunny and 24 °C."]),
        )
    messages: list[dict[str, object]] = [
        {"role": "user", "content": "What's the weather and the time in Hangzhou?"}
    ]
    async with TongyiLLMClient(model="qwen-plus", api_key=api_key, base_url=base_url) as client:
        output = await client.generate(messages, tools=TOOLS)
        while output.finish_reason == "tool_calls":
            messages.append(output.to_message())
            results = await run_tool_calls(output, TOOLS)  # bad arguments become messages too
            for result in results:
                print(f"tool {result['name']}: {result['content']}")
            messages += results
            output = await client.generate(messages, tools=TOOLS)
    print(f"answer: {output.text}")


if __name__ == "__main__":
    asyncio.run(main())
