"""The request builder: what is sent, and what is refused before sending."""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

import pytest

from aiotongyi import ModelRequest, Timeout
from aiotongyi._config import MULTIMODAL_PATH, TEXT_PATH
from aiotongyi._request import prepare_request


def body(request: Any = "hi", **params: Any) -> dict[str, Any]:
    prepared = prepare_request(request, params, default_model="qwen-turbo", model_alias="alias")
    decoded: dict[str, Any] = json.loads(prepared.body)
    return decoded


def test_a_prompt_becomes_one_user_message_with_streaming_parameters() -> None:
    assert body("hi") == {
        "model": "qwen-turbo",
        "input": {"messages": [{"role": "user", "content": "hi"}]},
        "parameters": {"result_format": "message", "incremental_output": True},
    }


def test_body_is_compact_utf8() -> None:
    prepared = prepare_request("春眠", {}, default_model="m", model_alias=None)
    assert "春眠".encode() in prepared.body
    assert b": " not in prepared.body


def test_falsy_values_are_sent_and_none_is_not() -> None:
    params = body(temperature=0, top_p=None, enable_search=False, seed=0)["parameters"]
    assert params["temperature"] == 0
    assert params["enable_search"] is False
    assert params["seed"] == 0
    assert "top_p" not in params


def test_nothing_is_hard_coded() -> None:
    assert set(body()["parameters"]) == {"result_format", "incremental_output"}


def test_max_new_tokens_is_an_alias_of_max_tokens() -> None:
    assert body(max_new_tokens=64)["parameters"]["max_tokens"] == 64
    assert body(max_tokens=8, max_new_tokens=64)["parameters"]["max_tokens"] == 8


def test_stop_accepts_a_string_or_a_list() -> None:
    assert body(stop="\n")["parameters"]["stop"] == "\n"
    assert body(stop=("a", "b"))["parameters"]["stop"] == ["a", "b"]


def test_keyword_beats_request_field() -> None:
    request = ModelRequest(messages="hi", temperature=0.5, top_k=3)
    params = body(request, temperature=0.1)["parameters"]
    assert params["temperature"] == 0.1
    assert params["top_k"] == 3


def test_extra_body_is_merged_into_parameters() -> None:
    params = body(extra_body={"logprobs": True, "incremental_output": False})["parameters"]
    assert params["logprobs"] is True
    assert params["incremental_output"] is False
    prepared = prepare_request(
        "hi", {"extra_body": {"incremental_output": False}}, default_model="m", model_alias=None
    )
    assert prepared.incremental is False


@pytest.mark.parametrize("model", [None, "", "alias"])
def test_empty_or_alias_model_means_the_default(model: str | None) -> None:
    assert body(model=model)["model"] == "qwen-turbo"


class DbgptLikeRequest:
    model = "qwen-max"
    temperature = 0.2
    top_p = None
    max_new_tokens = 100
    stop: ClassVar[list[str]] = ["x"]

    def to_common_messages(self) -> list[dict[str, Any]]:
        return [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]


def test_objects_with_to_common_messages_are_read() -> None:
    sent = body(DbgptLikeRequest())
    assert sent["model"] == "qwen-max"
    assert sent["input"]["messages"][0] == {"role": "system", "content": "s"}
    assert sent["parameters"]["temperature"] == 0.2
    assert sent["parameters"]["max_tokens"] == 100
    assert sent["parameters"]["stop"] == ["x"]
    assert "top_p" not in sent["parameters"]


def test_tool_round_trip_messages_pass_through() -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w"}}],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
    ]
    assert body(messages)["input"]["messages"] == messages


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"temperature": 2}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 1.5}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**63}, "seed"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"n": 5}, "n"),
        ({"thinking_budget": 0}, "thinking_budget"),
        ({"stop": 5}, "stop"),
        ({"stop": ["a", 1]}, "stop"),
        ({"enable_thinking": "yes"}, "enable_thinking"),
        ({"tools": "f"}, "tools"),
        ({"tool_choice": "always"}, "tool_choice"),
        ({"response_format": "json"}, "response_format"),
        ({"extra_body": [1]}, "extra_body"),
        ({"colour": "red"}, "colour"),
        ({"timeout": -1}, "Timeout"),
    ],
)
def test_bad_parameters_are_value_errors(params: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        body(**params)


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "robot", "content": "x"}],
        [{"content": "x"}],
        [{"role": "user", "content": 5}],
        [{"role": "user"}],
        ["hello"],
        [{"role": "user", "content": ["not a part"]}],
    ],
)
def test_bad_messages_are_value_errors(messages: list[Any]) -> None:
    with pytest.raises(ValueError, match="message"):
        body(messages)


def test_an_unsupported_request_type_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="request must be"):
        body(42)


def test_timeout_is_taken_from_params() -> None:
    prepared = prepare_request("x", {"timeout": 3}, default_model="m", model_alias=None)
    assert prepared.timeout == Timeout(total=3)


@pytest.mark.parametrize(
    ("model", "messages", "path"),
    [
        ("qwen-plus", "hi", TEXT_PATH),
        ("qwen-vl-max", "hi", MULTIMODAL_PATH),
        ("qwen2.5-vl-72b-instruct", "hi", MULTIMODAL_PATH),
        ("qvq-max", "hi", MULTIMODAL_PATH),
        ("qwen-audio-turbo", "hi", MULTIMODAL_PATH),
        (
            "qwen-plus",
            [{"role": "user", "content": [{"image": "https://x/a.png"}, {"text": "?"}]}],
            MULTIMODAL_PATH,
        ),
    ],
)
def test_multimodal_routing(model: str, messages: Any, path: str) -> None:
    prepared = prepare_request(messages, {"model": model}, default_model="m", model_alias=None)
    assert prepared.path == path


@pytest.mark.parametrize("model", ["qwen-omni-turbo", "qwen3-omni-flash", "Qwen2.5-Omni-7B"])
def test_omni_models_are_refused_with_where_they_are_served(model: str) -> None:
    with pytest.raises(ValueError, match="OpenAI-compatible endpoint"):
        prepare_request("hi", {"model": model}, default_model="m", model_alias=None)
    explicit = prepare_request(
        "hi", {"model": model, "endpoint": "multimodal"}, default_model="m", model_alias=None
    )
    assert explicit.path == MULTIMODAL_PATH


def test_new_first_class_parameters_are_sent() -> None:
    sent = body(
        enable_search=True,
        search_options={"forced_search": True, "enable_source": True},
        logprobs=True,
        top_logprobs=3,
        enable_code_interpreter=True,
        vl_high_resolution_images=True,
        translation_options={"source_lang": "auto", "target_lang": "English"},
    )["parameters"]
    assert sent["search_options"] == {"forced_search": True, "enable_source": True}
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 3)
    assert sent["enable_code_interpreter"] is True
    assert sent["vl_high_resolution_images"] is True
    assert sent["translation_options"] == {"source_lang": "auto", "target_lang": "English"}


def test_new_parameters_from_a_model_request() -> None:
    request = ModelRequest(messages="hi", logprobs=True, top_logprobs=0, search_options={})
    sent = body(request)["parameters"]
    assert (sent["logprobs"], sent["top_logprobs"], sent["search_options"]) == (True, 0, {})


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"top_logprobs": 21}, "top_logprobs must be in [0, 20]"),
        ({"top_logprobs": -1}, "top_logprobs must be in [0, 20]"),
        ({"top_logprobs": 1.5}, "top_logprobs must be an integer"),
        ({"logprobs": "yes"}, "logprobs must be True or False"),
        ({"enable_code_interpreter": 1}, "enable_code_interpreter must be True or False"),
        ({"vl_high_resolution_images": None, "logprobs": 0}, "logprobs must be True or False"),
        ({"search_options": ["forced_search"]}, "search_options must be a mapping"),
        ({"translation_options": "en"}, "translation_options must be a mapping"),
    ],
)
def test_new_parameters_are_checked(params: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        body(**params)


def test_n_is_handed_to_the_stream() -> None:
    assert prepare_request("x", {"n": 3}, default_model="m", model_alias=None).choices == 3
    assert prepare_request("x", {}, default_model="m", model_alias=None).choices == 1


def test_a_request_nested_too_deeply_is_a_value_error() -> None:
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ValueError, match="nested too deeply"):
        body(extra_body={"x": deep})
