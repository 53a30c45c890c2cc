"""generate_json(schema=...): the schema sent, and the answer as an instance of the type."""

from __future__ import annotations

import dataclasses
import enum
import json
import pickle
import subprocess
import sys
from typing import Annotated, Any, Literal, TypedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typing_extensions import NotRequired

from aiotongyi import JSONOutputError, TongyiLLMClient
from aiotongyi.testing import DashScopeEmulator, Reply


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclasses.dataclass
class Address:
    city: str
    zip_code: str | None


@dataclasses.dataclass
class Person:
    """Someone the answer describes."""

    name: str
    age: int
    height_m: float
    tags: list[str]
    address: Address
    colour: Colour
    nickname: str = ""
    scores: dict[str, int] = dataclasses.field(default_factory=dict)


class Movie(TypedDict):
    title: str
    year: int
    genre: Literal["drama", "comedy"]
    rating: NotRequired[float]


@dataclasses.dataclass
class Strict:
    a: int
    b: Annotated[list[bool], "flags, in order"]
    c: tuple[int, str]


def response_format(emulator: DashScopeEmulator) -> Any:
    return emulator.requests[-1].json["parameters"]["response_format"]


async def test_dataclass_answer_becomes_an_instance(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    answer = {
        "name": "Li",
        "age": 30,
        "height_m": 2,
        "tags": ["a"],
        "address": {"city": "Hangzhou", "zip_code": None},
        "colour": "green",
    }
    dashscope_emulator.enqueue(Reply(text=[json.dumps(answer)]))
    person = await client.generate_json("who?", schema=Person)
    assert person == Person("Li", 30, 2.0, ["a"], Address("Hangzhou", None), Colour.GREEN, "", {})
    assert isinstance(person.height_m, float)
    sent = response_format(dashscope_emulator)
    assert sent["type"] == "json_schema"
    spec = sent["json_schema"]
    assert spec["name"] == "Person"
    assert spec["strict"] is False  # nickname and scores have defaults
    schema = spec["schema"]
    assert schema["description"] == "Someone the answer describes."
    assert schema["required"] == ["name", "age", "height_m", "tags", "address", "colour"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["address"]["properties"]["zip_code"] == {
        "anyOf": [{"type": "string"}, {"type": "null"}]
    }
    assert schema["properties"]["colour"] == {"enum": ["red", "green"]}
    assert schema["properties"]["scores"] == {
        "type": "object",
        "additionalProperties": {"type": "integer"},
    }


def test_typeddict_in_sync_code(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=['{"title": "Up", "year": 2009, "genre": "comedy"}']))
    movie = sync_client.sync_generate_json("a film", schema=Movie)
    assert movie == {"title": "Up", "year": 2009, "genre": "comedy"}
    schema = response_format(dashscope_emulator)["json_schema"]["schema"]
    assert schema["required"] == ["title", "year", "genre"]
    assert schema["properties"]["genre"] == {"enum": ["drama", "comedy"]}


def test_strict_when_every_field_is_required(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=['{"a": 1, "b": [true], "c": [2, "x"]}']))
    assert sync_client.sync_generate_json("x", schema=Strict) == Strict(1, [True], (2, "x"))
    spec = response_format(dashscope_emulator)["json_schema"]
    assert spec["strict"] is True
    assert spec["schema"]["properties"]["b"] == {
        "type": "array",
        "items": {"type": "boolean"},
        "description": "flags, in order",
    }
    assert spec["schema"]["properties"]["c"]["prefixItems"] == [
        {"type": "integer"},
        {"type": "string"},
    ]


def test_pydantic_model(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    pydantic = pytest.importorskip("pydantic")

    class City(pydantic.BaseModel):
        name: str
        population: int

    class Answer(pydantic.BaseModel):
        cities: list[City]

    dashscope_emulator.enqueue(Reply(text=['{"cities": [{"name": "A", "population": 3}]}']))
    answer = sync_client.sync_generate_json("x", schema=Answer)
    assert answer == Answer(cities=[City(name="A", population=3)])
    spec = response_format(dashscope_emulator)["json_schema"]
    assert spec["name"] == "Answer"
    assert spec["schema"] == Answer.model_json_schema()

    dashscope_emulator.enqueue(Reply(text=['{"cities": [{"name": "A", "population": "many"}]}']))
    with pytest.raises(JSONOutputError) as caught:
        sync_client.sync_generate_json("x", schema=Answer)
    assert [error["loc"] for error in caught.value.errors] == [("cities", 0, "population")]


def test_an_answer_that_does_not_fit_is_a_json_output_error(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    text = '{"title": 5, "genre": "horror", "extra": 1}'
    dashscope_emulator.enqueue(Reply(text=[text], request_id="req-9"))
    with pytest.raises(JSONOutputError) as caught:
        sync_client.sync_generate_json("x", schema=Movie)
    exc = caught.value
    assert exc.text == text
    assert exc.request_id == "req-9"
    assert isinstance(exc, ValueError)
    problems = {(error["loc"], error["msg"]) for error in exc.errors}
    assert problems == {
        (("year",), "missing"),
        (("extra",), "unexpected field"),
        (("title",), "expected a string, got the number 5"),
        (("genre",), "expected one of 'drama', 'comedy', got 'horror'"),
    }
    assert "does not fit Movie" in str(exc)
    restored = pickle.loads(pickle.dumps(exc))
    assert restored.errors == exc.errors


def test_not_json_at_all(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["sorry, no"]))
    with pytest.raises(JSONOutputError) as caught:
        sync_client.sync_generate_json("x", schema=Movie)
    assert caught.value.text == "sorry, no"
    assert caught.value.errors == ()


def test_without_schema_it_is_json_mode_as_before(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=['{"a": [1]}']))
    assert sync_client.sync_generate_json("json please") == {"a": [1]}
    assert response_format(dashscope_emulator) == {"type": "json_object"}


def test_an_explicit_response_format_is_sent_as_given(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    mine = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    dashscope_emulator.enqueue(Reply(text=['{"title": "T", "year": 1, "genre": "drama"}']))
    sync_client.sync_generate_json("x", schema=Movie, response_format=mine)
    assert response_format(dashscope_emulator) == mine


def test_schema_must_be_a_model_dataclass_or_typeddict(sync_client: TongyiLLMClient) -> None:
    for bad in (
        int,
        dict,
        list[int],
        "Person",
        Person("a", 1, 1.0, [], Address("c", None), Colour.RED),
    ):
        with pytest.raises(ValueError, match="schema must be"):
            sync_client.sync_generate_json("x", schema=bad)  # type: ignore[call-overload]


@dataclasses.dataclass(frozen=True)
class Row:
    id: int
    label: str
    weight: float
    flags: tuple[bool, ...]
    parent: int | None
    kind: Literal["a", "b"]


rows = st.builds(
    Row,
    id=st.integers(-(2**53), 2**53),
    label=st.text(),
    weight=st.floats(allow_nan=False, allow_infinity=False),
    flags=st.lists(st.booleans(), max_size=5).map(tuple),
    parent=st.none() | st.integers(0, 10**9),
    kind=st.sampled_from(["a", "b"]),
)


@given(rows)
def test_every_instance_survives_a_trip_through_json(row: Row) -> None:
    from aiotongyi._structured import convert

    errors: list[dict[str, Any]] = []
    text = json.dumps(dataclasses.asdict(row))
    assert convert(Row, json.loads(text), errors) == row
    assert errors == []


def test_importing_aiotongyi_does_not_import_pydantic() -> None:
    code = "import sys, aiotongyi; print('pydantic' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"
