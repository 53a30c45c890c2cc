"""aiotongyi.integrations.dbgpt against the real DB-GPT package and the emulator.

Skipped unless DB-GPT is installed (the ``aiotongyi[dbgpt]`` extra; CI runs it
in its own venv through ``.ci/dbgpt.sh``).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import itertools
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

# DB-GPT's own imports warn (python-multipart, pydantic): not ours to fix.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", PendingDeprecationWarning)
    if not os.environ.get("AIOTONGYI_REQUIRE_DBGPT"):  # the CI job sets it: fail, never skip
        pytest.importorskip(
            "dbgpt.model.proxy.base",
            reason="DB-GPT is not installed (pip install 'aiotongyi[dbgpt]'; CI: .ci/dbgpt.sh)",
        )
    from dbgpt.core import (
        MessageConverter,
        ModelMessage,
        ModelMetadata,
        ModelOutput,
        ModelRequest,
    )
    from dbgpt.core.interface.parameter import LLMDeployModelParameters
    from dbgpt.model.adapter.base import get_model_adapter
    from dbgpt.model.cluster.worker.default_worker import DefaultModelWorker
    from dbgpt.model.proxy.base import ProxyLLMClient
    from dbgpt.model.proxy.llms.proxy_model import ProxyModel
    from starlette.concurrency import iterate_in_threadpool

import aiotongyi
from aiotongyi.integrations.dbgpt import (
    PROVIDER,
    TongyiAioDeployModelParameters,
    TongyiLLMClient,
    atongyi_generate_stream,
    tongyi_generate_stream,
)
from aiotongyi.testing import DashScopeEmulator, ErrorEvent, Reply, http_error

UNREACHABLE = "http://dashscope.invalid/api/v1"  # only a proxy can answer for it
GENERATE_ERROR = "**LLMServer Generate Error, Please CheckErrorInfo.**: "
ROOT = Path(__file__).resolve().parents[2]
# DB-GPT's worker calls pydantic's deprecated .dict() on every request.
dbgpt_worker_warnings = pytest.mark.filterwarnings(
    "ignore::pydantic.warnings.PydanticDeprecatedSince20"
)

MakeClient = Callable[..., TongyiLLMClient]


@pytest.fixture
def make_client(dashscope_emulator: DashScopeEmulator) -> Iterator[MakeClient]:
    """Clients on the emulator, closed after the test."""
    clients: list[TongyiLLMClient] = []

    def make(**kwargs: Any) -> TongyiLLMClient:
        kwargs.setdefault("model", "qwen-plus")
        kwargs.setdefault("api_key", dashscope_emulator.api_key)
        kwargs.setdefault("base_url", dashscope_emulator.base_url)
        client = TongyiLLMClient(**kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def request(*contents: str, **options: Any) -> ModelRequest:
    """A DB-GPT request alternating human and ai messages."""
    roles = ["human", "ai"]
    messages = [ModelMessage(role=roles[i % 2], content=c) for i, c in enumerate(contents)]
    return ModelRequest.build_request("tongyi_proxyllm", messages=messages, **options)


def worker_params(**options: Any) -> dict[str, Any]:
    return {"messages": [ModelMessage(role="human", content="hi")], **options}


def sent_parameters(emu: DashScopeEmulator) -> dict[str, Any]:
    body = emu.requests[-1].json
    assert isinstance(body, dict)
    parameters: dict[str, Any] = body["parameters"]
    return parameters


def assert_cumulative(outputs: list[Any], final: str) -> None:
    texts = [o.text for o in outputs]
    assert all(isinstance(o, ModelOutput) and o.error_code == 0 for o in outputs)
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))
    assert texts[-1] == final


# -- packaging ------------------------------------------------------------------


def test_client_is_a_real_dbgpt_proxy_client() -> None:
    assert issubclass(TongyiLLMClient, ProxyLLMClient)


def test_integration_imports_no_vendor_sdk() -> None:
    # A None entry in sys.modules makes any import of that name fail.
    code = (
        "import sys, warnings; warnings.simplefilter('ignore');"
        "sys.modules.update(dict.fromkeys(('dashscope', 'openai', 'tiktoken')));"
        "import aiotongyi.integrations.dbgpt as m; print(m.PROVIDER)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert out.stdout.strip() == "proxy/aiotongyi", out.stderr[-2000:]


# -- DB-GPT 0.7+: provider registration and the async path ------------------------


def test_provider_is_registered_with_dbgpt() -> None:
    adapter = get_model_adapter(PROVIDER, "qwen-plus")
    assert adapter is not None
    params = TongyiAioDeployModelParameters(name="qwen-plus")
    assert adapter.model_param_class() is TongyiAioDeployModelParameters
    assert adapter.get_llm_client_class(params) is TongyiLLMClient
    assert adapter.support_async()
    assert LLMDeployModelParameters.get_subclass(PROVIDER) is TongyiAioDeployModelParameters
    assert TongyiLLMClient.param_class() is TongyiAioDeployModelParameters
    assert TongyiLLMClient.generate_stream_function() is atongyi_generate_stream
    assert TongyiLLMClient.generate_function() is None


def test_deploy_parameters_defaults() -> None:
    params = TongyiAioDeployModelParameters(name="qwen-plus")
    assert params.provider == PROVIDER
    assert params.api_key == "${env:DASHSCOPE_API_KEY}"
    assert params.concurrency == 100
    key_field = {f.name: f for f in dataclasses.fields(params)}["api_key"]
    assert key_field.metadata["tags"] == "privacy"
    # DB-GPT 0.8's loader reads annotations at run time: no strings allowed.
    assert not any(isinstance(f.type, str) for f in dataclasses.fields(params))


async def test_adapter_loads_client_and_streams_async(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    emu = dashscope_emulator
    adapter = get_model_adapter(PROVIDER, "my-qwen")
    params = TongyiAioDeployModelParameters(
        name="my-qwen", backend="qwen-max", api_key=emu.api_key, api_base=emu.base_url
    )
    model, _ = adapter.load_from_params(params)
    client = model.proxy_llm_client
    assert isinstance(client, TongyiLLMClient)
    assert client.default_model == "qwen-max"
    fn = adapter.get_async_generate_stream_function(model, params)
    assert fn is atongyi_generate_stream
    emu.enqueue(Reply(text=["Hel", "lo"], usage=(3, 2)))
    outputs = [o async for o in fn(model, None, worker_params(temperature=0.5), "cpu", 4096)]
    assert_cumulative(outputs, "Hello")
    assert emu.requests[-1].json["model"] == "qwen-max"
    assert sent_parameters(emu)["temperature"] == 0.5
    await client.aclose()


@dbgpt_worker_warnings
async def test_dbgpt_worker_streams_through_the_provider(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    emu = dashscope_emulator
    params = TongyiAioDeployModelParameters(
        name="qwen-plus", api_key=emu.api_key, api_base=emu.base_url
    )
    worker = DefaultModelWorker()
    worker.load_worker("qwen-plus", params)
    worker.start()
    assert worker.support_async()
    emu.enqueue(Reply(text=["Hel", "lo", "!"], usage=(5, 3)))
    options = {"temperature": 0.2, "max_new_tokens": 7, "top_p": 0.3, "stop": ["END"]}
    outputs = [o async for o in worker.async_generate_stream(worker_params(**options))]
    assert_cumulative(outputs, "Hello!")
    assert outputs[-1].finish_reason == "stop"
    assert outputs[-1].usage == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    sent = sent_parameters(emu)
    assert (sent["temperature"], sent["max_tokens"], sent["top_p"], sent["stop"]) == (
        0.2,
        7,
        0.3,
        ["END"],
    )
    await worker.model.proxy_llm_client.aclose()


def test_config_hook_registers_provider_before_models_are_parsed(
    tmp_path: Path, dashscope_emulator: DashScopeEmulator
) -> None:
    config = tmp_path / "dbgpt.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [[hooks]]
            path = "aiotongyi.integrations.dbgpt.config_hook"

            [[models.llms]]
            name = "qwen-plus"
            provider = "proxy/aiotongyi"
            api_key = "${{env:AIOTONGYI_TEST_KEY}}"
            api_base = "{dashscope_emulator.base_url}"
            enable_thinking = false
            """
        )
    )
    script = textwrap.dedent(
        """
        import sys, warnings
        from dataclasses import dataclass, field
        warnings.simplefilter("ignore")
        from dbgpt.core import ModelMessage, ModelRequest
        from dbgpt.model import scan_model_providers
        from dbgpt.model.adapter.base import get_model_adapter
        from dbgpt.model.parameter import ModelsDeployParameters
        from dbgpt.util.configure import ConfigurationManager
        from dbgpt.util.parameter_utils import BaseParameters

        @dataclass
        class App(BaseParameters):
            models: ModelsDeployParameters = field(default_factory=ModelsDeployParameters)

        scan_model_providers()
        assert "aiotongyi.integrations.dbgpt" not in sys.modules
        app = ConfigurationManager.from_file(sys.argv[1]).parse_config(App, hook_section="hooks")
        llm = app.models.llms[0]
        model, _ = get_model_adapter(llm.provider, llm.name).load_from_params(llm)
        client = model.proxy_llm_client
        request = ModelRequest.build_request("", messages=[ModelMessage(role="human", content="q")])
        final = list(client.sync_generate_stream(request))[-1]
        print(type(llm).__name__, llm.enable_thinking, client.base_url, final.error_code)
        client.close()
        """
    )
    env = {**os.environ, "AIOTONGYI_TEST_KEY": "sk-from-env"}
    out = subprocess.run(
        [sys.executable, "-c", script, str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [
        "TongyiAioDeployModelParameters",
        "False",
        dashscope_emulator.base_url,
        "0",
    ]
    sent = dashscope_emulator.requests[-1]
    assert sent.headers["authorization"] == "Bearer sk-from-env"
    assert sent.json["parameters"]["enable_thinking"] is False


def test_new_client_from_deploy_parameters(
    monkeypatch: pytest.MonkeyPatch, dashscope_emulator: DashScopeEmulator
) -> None:
    emu = dashscope_emulator
    monkeypatch.setenv("AIOTONGYI_TEST_KEY", "sk-resolved")
    params = TongyiAioDeployModelParameters(
        name="alias",
        backend="qwen-max",
        api_key="${env:AIOTONGYI_TEST_KEY}",
        api_base=UNREACHABLE,
        context_length=None,
        http_proxy=emu.base_url.removesuffix("/api/v1"),
        timeout=0.5,
        enable_thinking=True,
    )
    client = TongyiLLMClient.new_client(params)
    assert (client.default_model, client.model_names) == ("qwen-max", ["qwen-max", "alias"])
    assert client.context_length == 4096
    assert client.base_url == UNREACHABLE
    # Only the proxy can answer for that host; the alias means the backend model.
    aliased = ModelRequest.build_request(
        "alias", messages=[ModelMessage(role="human", content="q")]
    )
    assert drain_sync(client, aliased)[-1].error_code == 0
    sent = emu.requests[-1]
    assert sent.headers["authorization"] == "Bearer sk-resolved"
    assert (sent.json["model"], sent.json["parameters"]["enable_thinking"]) == ("qwen-max", True)
    # The 0.5 s total timeout ends a stalled answer.
    emu.enqueue(Reply(text=["a", "b"], stall_after_frames=1, stall_seconds=10))
    started = time.monotonic()
    outputs = drain_sync(client, request("q"))
    assert [o.error_code for o in outputs] == [0, 1]
    assert time.monotonic() - started < 5
    client.close()


def test_deploy_parameters_region() -> None:
    params = TongyiAioDeployModelParameters(name="qwen-plus", api_key="k", api_region="intl")
    client = TongyiLLMClient.new_client(params)
    assert client.base_url == "https://dashscope-intl.aliyuncs.com/api/v1"


def test_unset_key_variable_becomes_one_api_error_output(
    monkeypatch: pytest.MonkeyPatch, dashscope_emulator: DashScopeEmulator
) -> None:
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    monkeypatch.delenv("AIOTONGYI_UNSET_KEY", raising=False)
    params = TongyiAioDeployModelParameters(
        name="qwen-plus", api_key="${env:AIOTONGYI_UNSET_KEY}", api_base=dashscope_emulator.base_url
    )
    client = TongyiLLMClient.new_client(params)
    outputs = list(client.sync_generate_stream(request("hi")))
    assert [o.error_code for o in outputs] == [-1]
    assert outputs[0].text.startswith("MissingApiKey:")
    assert dashscope_emulator.requests == []


# -- DB-GPT 0.5/0.6: the seed path ------------------------------------------------


def seed_params(emu: DashScopeEmulator, **extra: Any) -> SimpleNamespace:
    return SimpleNamespace(
        proxyllm_backend="qwen-plus",
        proxy_api_key=emu.api_key,
        proxy_api_base=emu.base_url,
        model_name="tongyi_proxyllm",
        max_context_size=8192,
        **extra,
    )


async def test_seed_new_client_reads_proxy_model_parameters(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    client = TongyiLLMClient.new_client(seed_params(dashscope_emulator))
    assert client.default_model == "qwen-plus"
    assert client.base_url == dashscope_emulator.base_url
    assert [(m.model, m.context_length) for m in await client.models()] == [
        ("qwen-plus", 8192),
        ("tongyi_proxyllm", 8192),
    ]
    intl = TongyiLLMClient.new_client(seed_params(dashscope_emulator, proxy_api_region="intl"))
    assert intl.base_url == dashscope_emulator.base_url  # proxy_api_base wins
    no_base = seed_params(dashscope_emulator, proxy_api_region="intl")
    no_base.proxy_api_base = None
    assert (
        TongyiLLMClient.new_client(no_base).base_url == "https://dashscope-intl.aliyuncs.com/api/v1"
    )


async def test_seed_stream_drained_by_iterate_in_threadpool(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    emu = dashscope_emulator
    client = TongyiLLMClient.new_client(seed_params(emu))
    model = ProxyModel(seed_params(emu), client)
    emu.enqueue(Reply(text=["Hel", "lo", " world"], usage=(4, 3)))
    params = worker_params(temperature=0.0, max_new_tokens=64, stop="END", top_p=0.9)
    generator = tongyi_generate_stream(model, None, params, "cpu")
    outputs = [o async for o in iterate_in_threadpool(generator)]
    assert_cumulative(outputs, "Hello world")
    assert outputs[-1].usage == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    sent = sent_parameters(emu)
    # Each one was dropped (or top_p hard-coded to 0.8) by the seed; temperature 0 is sent.
    assert (sent["temperature"], sent["max_tokens"], sent["stop"], sent["top_p"]) == (
        0.0,
        64,
        "END",
        0.9,
    )
    await client.aclose()


def test_seed_stream_survives_next_from_a_new_thread_each_time(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    emu = dashscope_emulator
    client = TongyiLLMClient.new_client(seed_params(emu))
    emu.enqueue(Reply(text=["a", "b", "c", "d"]))
    generator = tongyi_generate_stream(
        SimpleNamespace(proxy_llm_client=client), None, worker_params(), "cpu"
    )
    outputs: list[Any] = []
    threads: set[str] = set()

    def step() -> None:
        threads.add(threading.current_thread().name)
        outputs.append(next(generator, None))

    while not outputs or outputs[-1] is not None:
        thread = threading.Thread(target=step, name=f"next-{len(outputs)}")
        thread.start()
        thread.join(10)
    assert len(threads) == len(outputs) >= 5
    assert_cumulative(outputs[:-1], "abcd")
    client.close()


def test_unset_parameters_are_not_sent(
    make_client: MakeClient, dashscope_emulator: DashScopeEmulator
) -> None:
    outputs = list(make_client().sync_generate_stream(request("hi")))
    assert outputs[-1].error_code == 0
    sent = sent_parameters(dashscope_emulator)
    assert not {"temperature", "top_p", "max_tokens", "stop", "enable_thinking"} & set(sent)


# -- outputs --------------------------------------------------------------------


def test_outputs_are_dbgpt_outputs_with_usage_and_finish_reason(
    make_client: MakeClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["The ", "answer ", "is 42."], usage=(10, 6)))
    outputs = list(make_client().sync_generate_stream(request("q")))
    assert_cumulative(outputs, "The answer is 42.")
    assert all(type(o) is ModelOutput for o in outputs)
    assert [o.finish_reason for o in outputs[:-1]] == [None] * (len(outputs) - 1)
    assert outputs[-1].finish_reason == "stop"
    assert all(
        set(o.usage) == {"prompt_tokens", "completion_tokens", "total_tokens"} for o in outputs
    )
    assert outputs[-1].usage == {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16}


def test_length_finish_reason_passes_through(
    make_client: MakeClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["cut"], finish_reason="length"))
    outputs = list(make_client().sync_generate_stream(request("q", max_new_tokens=1)))
    assert (outputs[-1].text, outputs[-1].finish_reason) == ("cut", "length")


async def test_thinking_is_a_content_part_and_text_always_readable(
    make_client: MakeClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(thinking=["Let me ", "think."], text=["Hi", "!"]))
    client = make_client(model="qwen3-plus")
    outputs = [o async for o in client.generate_stream(request("q"))]
    assert [o.text for o in outputs] == ["", "", "Hi", "Hi!", "Hi!"]
    thinking = [o.thinking_text for o in outputs]
    assert thinking == [
        "Let me ",
        "Let me think.",
        "Let me think.",
        "Let me think.",
        "Let me think.",
    ]
    assert all(o.has_thinking and o.has_text for o in outputs)
    await client.aclose()


def test_include_thinking_false_strips_reasoning(
    make_client: MakeClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(thinking=["hmm"], text=["Hi"]))
    outputs = list(make_client(include_thinking=False).sync_generate_stream(request("q")))
    assert [o.text for o in outputs] == ["Hi", "Hi"]
    assert not any(o.has_thinking for o in outputs)


def test_enable_thinking_is_sent_only_when_set(
    make_client: MakeClient, dashscope_emulator: DashScopeEmulator
) -> None:
    list(make_client(enable_thinking=False).sync_generate_stream(request("q")))
    assert sent_parameters(dashscope_emulator)["enable_thinking"] is False


async def test_generate_returns_the_last_output(
    make_client: MakeClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["a", "b"], usage=(1, 2)))
    client = make_client()
    output = await client.generate(request("q"))
    assert (output.text, output.error_code, output.finish_reason) == ("ab", 0, "stop")
    assert dashscope_emulator.requests[-1].headers["x-dashscope-sse"] == "enable"
    dashscope_emulator.enqueue(http_error(400, "InvalidParameter", "Range of top_p is wrong."))
    failed = await client.generate(request("q"))
    assert (failed.error_code, failed.text) == (-1, "InvalidParameter:Range of top_p is wrong.")
    await client.aclose()


# -- errors: exactly one error output, then the stream ends ------------------------


def drain_sync(client: TongyiLLMClient, req: ModelRequest) -> list[Any]:
    return list(client.sync_generate_stream(req))


def drain_async(client: TongyiLLMClient, req: ModelRequest) -> list[Any]:
    async def run() -> list[Any]:
        return [o async for o in client.generate_stream(req)]

    return asyncio.run(run())


@pytest.mark.parametrize("drain", [drain_sync, drain_async], ids=["sync", "async"])
def test_http_error_is_one_api_error_output(
    drain: Callable[[TongyiLLMClient, ModelRequest], list[Any]],
    make_client: MakeClient,
    dashscope_emulator: DashScopeEmulator,
) -> None:
    dashscope_emulator.enqueue(http_error(401, "InvalidApiKey", "Invalid API-key provided."))
    outputs = drain(make_client(api_key="sk-secret-0123456789"), request("q"))
    assert [(o.error_code, o.text) for o in outputs] == [
        (-1, "InvalidApiKey:Invalid API-key provided.")
    ]


@pytest.mark.parametrize("drain", [drain_sync, drain_async], ids=["sync", "async"])
def test_in_stream_error_after_content_ends_the_stream(
    drain: Callable[[TongyiLLMClient, ModelRequest], list[Any]],
    make_client: MakeClient,
    dashscope_emulator: DashScopeEmulator,
) -> None:
    event = ErrorEvent(
        "DataInspectionFailed", "Output data may contain inappropriate content.", after_frames=2
    )
    dashscope_emulator.enqueue(Reply(text=["a", "b", "c"], error_event=event))
    outputs = drain(make_client(max_retries=0), request("q"))
    assert [o.error_code for o in outputs] == [0, 0, -1]
    assert outputs[1].text == "ab"
    assert outputs[-1].text == (
        "DataInspectionFailed:Output data may contain inappropriate content."
    )


@pytest.mark.parametrize("drain", [drain_sync, drain_async], ids=["sync", "async"])
def test_cut_stream_is_one_generate_error_output(
    drain: Callable[[TongyiLLMClient, ModelRequest], list[Any]],
    make_client: MakeClient,
    dashscope_emulator: DashScopeEmulator,
) -> None:
    dashscope_emulator.enqueue(Reply(text=["a", "b", "c"], drop_after_frames=1))
    outputs = drain(make_client(), request("q"))
    assert [o.error_code for o in outputs] == [0, 1]
    assert outputs[0].text == "a"
    assert outputs[1].text.startswith(GENERATE_ERROR)
    assert "\n" not in outputs[1].text


def test_connect_failure_is_one_generate_error_output(make_client: MakeClient) -> None:
    with DashScopeEmulator() as gone:
        base_url = gone.base_url  # a port nobody listens on once stopped
    outputs = drain_sync(make_client(base_url=base_url, max_retries=0), request("q"))
    assert [o.error_code for o in outputs] == [1]
    assert outputs[0].text.startswith(GENERATE_ERROR)


def test_empty_message_is_one_generate_error_output_and_sends_nothing(
    make_client: MakeClient, dashscope_emulator: DashScopeEmulator
) -> None:
    outputs = drain_sync(make_client(), request(""))
    assert [o.error_code for o in outputs] == [1]
    assert outputs[0].text.startswith(GENERATE_ERROR)
    assert dashscope_emulator.requests == []


def test_api_key_never_reaches_outputs_or_repr(
    make_client: MakeClient, dashscope_emulator: DashScopeEmulator
) -> None:
    key = "sk-very-secret-key-0123456789"
    dashscope_emulator.enqueue(http_error(401, "InvalidApiKey", "Invalid API-key provided."))
    client = make_client(api_key=key)
    outputs = drain_sync(client, request("q"))
    assert key not in outputs[0].text
    assert key not in repr(client)
    assert dashscope_emulator.requests[-1].headers["authorization"] == f"Bearer {key}"


async def test_cancelled_stream_closes_the_response_without_an_error_output(
    make_client: MakeClient, dashscope_emulator: DashScopeEmulator
) -> None:
    emu = dashscope_emulator
    emu.enqueue(Reply(text=["a", "b"], stall_after_frames=1, stall_seconds=10))
    client = make_client()
    seen: list[Any] = []
    first = asyncio.Event()

    async def consume() -> None:
        async for output in client.generate_stream(request("q")):
            seen.append(output)  # the list must fill while streaming
            first.set()

    task = asyncio.ensure_future(consume())
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [o.text for o in seen] == ["a"]
    await client.aclose()
    assert await asyncio.to_thread(emu.wait_for_open_connections, 0)


def test_closing_the_sync_stream_closes_the_response(
    make_client: MakeClient, dashscope_emulator: DashScopeEmulator
) -> None:
    emu = dashscope_emulator
    emu.enqueue(Reply(text=["a", "b"], stall_after_frames=1, stall_seconds=10))
    stream = make_client().sync_generate_stream(request("q"))
    assert next(stream).text == "a"
    stream.close()
    assert emu.wait_for_open_connections(0)


# -- request mapping ----------------------------------------------------------------


def test_messages_map_roles_in_order_and_drop_view(
    make_client: MakeClient, dashscope_emulator: DashScopeEmulator
) -> None:
    messages = [
        ModelMessage(role="system", content="Be brief."),
        ModelMessage(role="human", content="Hi"),
        ModelMessage(role="view", content="(shown to the user only)"),
        ModelMessage(role="ai", content="Hello."),
        ModelMessage(role="human", content="Bye"),
    ]
    req = ModelRequest.build_request("", messages=messages)
    assert drain_sync(make_client(), req)[-1].error_code == 0
    sent = dashscope_emulator.requests[-1].json["input"]["messages"]
    assert sent == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ]


@pytest.mark.parametrize(
    ("requested", "sent"),
    [("", "qwen-plus"), ("tongyi_proxyllm", "qwen-plus"), ("qwen-max", "qwen-max")],
)
def test_request_model_mapping(
    requested: str, sent: str, make_client: MakeClient, dashscope_emulator: DashScopeEmulator
) -> None:
    req = ModelRequest.build_request(requested, messages=[ModelMessage(role="human", content="q")])
    drain_sync(make_client(), req)
    assert dashscope_emulator.requests[-1].json["model"] == sent


def test_message_converter_output_is_sent_and_request_untouched(
    make_client: MakeClient, dashscope_emulator: DashScopeEmulator
) -> None:
    seen: list[Any] = []

    class Prefix(MessageConverter):  # type: ignore[misc]
        def convert(
            self, messages: list[ModelMessage], model_metadata: ModelMetadata | None = None
        ) -> list[ModelMessage]:
            seen.append(model_metadata)
            return [ModelMessage(role="system", content="sys"), *messages]

    req = request("q")
    client = make_client(context_length=1234)
    assert drain_sync_with(client, req, Prefix())[-1].error_code == 0
    assert [m["role"] for m in dashscope_emulator.requests[-1].json["input"]["messages"]] == [
        "system",
        "user",
    ]
    assert len(req.messages) == 1
    assert (seen[0].model, seen[0].context_length) == ("qwen-plus", 1234)


def drain_sync_with(client: TongyiLLMClient, req: ModelRequest, converter: Any) -> list[Any]:
    return list(client.sync_generate_stream(req, converter))


# -- configuration ------------------------------------------------------------------


def test_seed_defaults_and_extra_options() -> None:
    client = TongyiLLMClient(api_key="k", api_type="openai", openai_kwargs={}, api_version="v")
    assert client.default_model == "qwen-turbo"
    assert client.model_names == ["qwen-turbo", "tongyi_proxyllm"]
    assert client.context_length == 4096


def test_api_region_is_honoured_and_checked() -> None:
    client = TongyiLLMClient(api_key="k", api_region="intl")
    assert client.base_url == "https://dashscope-intl.aliyuncs.com/api/v1"
    with pytest.raises(ValueError):
        TongyiLLMClient(api_key="k", api_region="mars-north-1")


@pytest.mark.parametrize("suffix", ["/compatible-mode/v1", "/compatible-mode/v1/"])
def test_compatible_mode_api_base_is_mapped_to_native(suffix: str) -> None:
    client = TongyiLLMClient(api_key="k", api_base="https://dashscope.aliyuncs.com" + suffix)
    assert client.base_url == "https://dashscope.aliyuncs.com/api/v1"


def test_compatible_mode_api_base_reaches_the_native_endpoint(
    make_client: MakeClient, dashscope_emulator: DashScopeEmulator
) -> None:
    host = dashscope_emulator.base_url.removesuffix("/api/v1")
    client = make_client(base_url=None, api_base=host + "/compatible-mode/v1")
    assert drain_sync(client, request("q"))[-1].error_code == 0
    assert dashscope_emulator.requests[-1].path.startswith("/api/v1/services/aigc/")


def test_two_clients_keep_their_own_keys(
    make_client: MakeClient, dashscope_emulator: DashScopeEmulator
) -> None:
    environ = dict(os.environ)
    first, second = make_client(api_key="sk-first"), make_client(api_key="sk-second")
    one, two = first.sync_generate_stream(request("1")), second.sync_generate_stream(request("2"))
    next(one), next(two)  # both streams open at once
    list(one), list(two)
    list(first.sync_generate_stream(request("3")))
    keys = [r.headers["authorization"] for r in dashscope_emulator.requests]
    assert keys == ["Bearer sk-first", "Bearer sk-second", "Bearer sk-first"]
    assert dict(os.environ) == environ


def test_many_threads_share_one_client(
    make_client: MakeClient, dashscope_emulator: DashScopeEmulator
) -> None:
    client = make_client()
    with ThreadPoolExecutor(8) as pool:
        finals = list(pool.map(lambda i: drain_sync(client, request(f"n{i}"))[-1].text, range(16)))
    assert finals == [f"Hello! You said: n{i}" for i in range(16)]


def test_one_client_on_several_event_loops(make_client: MakeClient) -> None:
    client = make_client()
    for _ in range(3):
        assert drain_async(client, request("q"))[-1].error_code == 0
    assert drain_sync(client, request("q"))[-1].error_code == 0


def test_caller_executor_runs_the_bridge(make_client: MakeClient) -> None:
    with ThreadPoolExecutor(2) as executor:
        client = make_client(executor=executor)
        assert client.executor is executor
        assert drain_sync(client, request("q"))[-1].error_code == 0
        client.close()


async def test_count_token_without_tokenizer_is_minus_one() -> None:
    assert await TongyiLLMClient(api_key="k").count_token("qwen-plus", "hello") == -1


async def test_count_token_uses_given_tokenizer_and_never_raises() -> None:
    class Tokenizer:
        def __init__(self, fail: bool) -> None:
            self.fail = fail

        def support_async(self) -> bool:
            return False

        def count_token(self, model: str, prompts: list[str]) -> list[int]:
            if self.fail:
                raise RuntimeError("no encoding")
            return [len(p.split()) for p in prompts]

    counting = TongyiLLMClient(api_key="k", proxy_tokenizer=Tokenizer(fail=False))
    assert await counting.count_token("qwen-plus", "one two three") == 3
    failing = TongyiLLMClient(api_key="k", proxy_tokenizer=Tokenizer(fail=True))
    assert await failing.count_token("qwen-plus", "x") == -1


# -- pickling and copying -----------------------------------------------------------


@pytest.mark.parametrize(
    "clone",
    [lambda c: pickle.loads(pickle.dumps(c)), copy.deepcopy, copy.copy],
    ids=["pickle", "deepcopy", "copy"],
)
def test_clone_after_streaming_keeps_configuration_and_works(
    clone: Callable[[TongyiLLMClient], TongyiLLMClient],
    make_client: MakeClient,
    dashscope_emulator: DashScopeEmulator,
) -> None:
    client = make_client(api_key="sk-cloned", context_length=2048)
    assert drain_sync(client, request("before"))[-1].error_code == 0
    drain_async(client, request("async too"))
    twin = clone(client)
    client.close()  # connections and thread are never copied: the twin keeps working
    try:
        assert (twin.default_model, twin.context_length, twin.base_url) == (
            "qwen-plus",
            2048,
            dashscope_emulator.base_url,
        )
        assert drain_sync(twin, request("after"))[-1].text == "Hello! You said: after"
        assert drain_async(twin, request("async after"))[-1].error_code == 0
        assert dashscope_emulator.requests[-1].headers["authorization"] == "Bearer sk-cloned"
    finally:
        twin.close()


def loop_threads() -> int:
    return sum(t.name == "aiotongyi-loop" for t in threading.enumerate())


def test_pickled_state_holds_configuration_only(make_client: MakeClient) -> None:
    client = make_client()
    drain_sync(client, request("q"))
    state = client.__getstate__()
    assert not any(
        isinstance(value, aiotongyi.TongyiLLMClient | Executor | threading.Thread)
        for value in state.values()
    )
    running = loop_threads()
    restored = pickle.loads(pickle.dumps(client))
    assert isinstance(restored.executor, ThreadPoolExecutor)
    assert restored.executor is not client.executor
    assert loop_threads() == running  # nothing starts until the first call
    assert drain_sync(restored, request("q"))[-1].error_code == 0
    assert loop_threads() == running + 1
    restored.close()
    assert loop_threads() == running


def test_exit_with_unclosed_clients_is_quiet() -> None:
    script = textwrap.dedent(
        """
        import asyncio, warnings
        from concurrent.futures import ThreadPoolExecutor
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        from dbgpt.core import ModelMessage, ModelRequest
        from aiotongyi.integrations.dbgpt import TongyiLLMClient
        from aiotongyi.testing import DashScopeEmulator

        emu = DashScopeEmulator().start()
        req = ModelRequest.build_request("", messages=[ModelMessage(role="human", content="q")])
        plain = TongyiLLMClient(api_key=emu.api_key, base_url=emu.base_url)
        pooled = TongyiLLMClient(
            api_key=emu.api_key, base_url=emu.base_url, executor=ThreadPoolExecutor(2)
        )
        for client in (plain, pooled):
            print(list(client.sync_generate_stream(req))[-1].error_code)
            print(asyncio.run(client.generate(req)).error_code)
        """
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (out.returncode, out.stdout.split()) == (0, ["0", "0", "0", "0"]), out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert "Exception ignored" not in out.stderr


def test_requests_are_aiotongyi_requests(
    make_client: MakeClient, dashscope_emulator: DashScopeEmulator
) -> None:
    drain_sync(make_client(), request("q"))
    assert dashscope_emulator.requests[-1].headers["user-agent"].startswith("aiotongyi/")
