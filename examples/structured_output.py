"""Typed structured output: the answer as a dataclass (or TypedDict, or pydantic model).

python examples/structured_output.py
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from _emulator_fallback import backend

from aiotongyi import JSONOutputError, TongyiLLMClient
from aiotongyi.testing import Reply


@dataclass
class City:
    """A city and what it is known for."""

    name: str
    province: str
    population_millions: float
    known_for: list[str]
    climate: Literal["tropical", "subtropical", "temperate", "continental"]
    nicknames: list[str] = field(default_factory=list)


async def main() -> None:
    api_key, base_url, emulator = backend()
    if emulator is not None:  # scripted, so the emulator's answer fits the schema
        emulator.enqueue(
            Reply(
                text=[
                    '{"name": "Hangzhou", "province": "Zhejiang", ',
                    '"population_millions": 12.5, "known_for": ["West Lake", "Longjing tea"], ',
                    '"climate": "subtropical"}',
                ]
            ),
            Reply(text=['{"name": "Hangzhou", "population_millions": "many"}']),
        )
    async with TongyiLLMClient(model="qwen-plus", api_key=api_key, base_url=base_url) as client:
        # Sends response_format={"type": "json_schema", ...} built from City.
        city = await client.generate_json("Describe Hangzhou.", schema=City)
        print(f"{city.name} ({city.province}): {city.population_millions} million people")
        print(f"known for: {', '.join(city.known_for)}; climate: {city.climate}")
        try:
            await client.generate_json("Describe Hangzhou again.", schema=City)
        except JSONOutputError as exc:  # the answer did not fit: raw text and what was wrong
            for error in exc.errors:
                print(f"did not fit: {'.'.join(map(str, error['loc']))}: {error['msg']}")
            print(f"raw text: {exc.text}")


if __name__ == "__main__":
    asyncio.run(main())
