"""OpenTelemetry spans and metrics, checked with the real SDK's in-memory exporter and reader."""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from aiotongyi import BadRequestError, RateLimiter, RateLimitError, TongyiLLMClient
from aiotongyi.testing import DashScopeEmulator, Reply, http_error

from ..conftest import eventually, make_client

SLOW = {"text": [f"t{i} " for i in range(200)], "frame_delay": 0.01}
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)


class Telemetry:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def client(self, emulator: DashScopeEmulator, **kwargs: Any) -> TongyiLLMClient:
        kwargs.setdefault("telemetry", True)
        return make_client(
            emulator,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            **kwargs,
        )

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self) -> ReadableSpan:
        spans = self.spans()
        assert len(spans) == 1, [s.name for s in spans]
        return spans[0]

    def points(self, name: str) -> list[HistogramDataPoint]:
        data = self.reader.get_metrics_data()
        found: list[HistogramDataPoint] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found += metric.data.data_points  # type: ignore[arg-type]
        return found


@pytest.fixture
def otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Telemetry]:
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    monkeypatch.delenv("AIOTONGYI_TELEMETRY", raising=False)
    telemetry = Telemetry()
    yield telemetry
    telemetry.tracer_provider.shutdown()
    telemetry.meter_provider.shutdown()


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_streamed_call_is_one_client_span_with_the_conventions_attributes(
    dashscope_emulator: DashScopeEmulator, otel: Telemetry
) -> None:
    dashscope_emulator.enqueue(Reply(text=["你好", "世界"], request_id="rid-1", usage=(11, 4)))
    async with otel.client(dashscope_emulator) as client:
        async with client.generate_stream(
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "secret"}],
            model="qwen-plus",
            temperature=0.5,
            top_p=0.8,
            top_k=20,
            max_tokens=100,
            presence_penalty=0.1,
            seed=42,
            stop=["END"],
        ) as stream:
            async for _ in stream:
                pass
    span = otel.span()
    assert span.name == "chat qwen-plus"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    got = attrs(span)
    ttfc = got.pop("gen_ai.response.time_to_first_chunk")
    assert 0 < ttfc < 5
    assert got == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "dashscope",
        "gen_ai.request.model": "qwen-plus",
        "gen_ai.request.stream": True,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.top_p": 0.8,
        "gen_ai.request.top_k": 20,
        "gen_ai.request.max_tokens": 100,
        "gen_ai.request.presence_penalty": 0.1,
        "gen_ai.request.seed": 42,
        "gen_ai.request.stop_sequences": ("END",),
        "server.address": "127.0.0.1",
        "server.port": int(dashscope_emulator.base_url.split(":")[2].split("/")[0]),
        "gen_ai.response.id": "rid-1",
        "gen_ai.response.model": "qwen-plus",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 4,
    }
    # no message content unless opted in
    assert not any("messages" in key or "instructions" in key for key in got)
    assert "secret" not in json.dumps(got, default=str)


async def test_metrics_have_the_conventions_names_attributes_and_buckets(
    dashscope_emulator: DashScopeEmulator, otel: Telemetry
) -> None:
    dashscope_emulator.enqueue(Reply(text=["a"] * 5, usage=(7, 5), frame_delay=0.02))
    async with otel.client(dashscope_emulator) as client:
        await client.generate("hi")
    base = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "dashscope",
        "gen_ai.request.model": "qwen-turbo",
        "server.address": "127.0.0.1",
    }
    (duration,) = otel.points("gen_ai.client.operation.duration")
    assert tuple(duration.explicit_bounds[: len(DURATION_BUCKETS)]) == DURATION_BUCKETS
    assert base.items() <= dict(duration.attributes or {}).items()
    assert dict(duration.attributes or {})["gen_ai.response.model"] == "qwen-turbo"
    assert duration.count == 1 and duration.sum > 0.08
    tokens = {
        dict(p.attributes or {})["gen_ai.token.type"]: p
        for p in otel.points("gen_ai.client.token.usage")
    }
    assert tokens["input"].sum == 7 and tokens["output"].sum == 5
    assert tuple(tokens["input"].explicit_bounds[: len(TOKEN_BUCKETS)]) == TOKEN_BUCKETS
    (ttfc,) = otel.points("gen_ai.client.operation.time_to_first_chunk")
    assert ttfc.count == 1
    assert tuple(ttfc.explicit_bounds[: len(DURATION_BUCKETS)]) == DURATION_BUCKETS
    (per_chunk,) = otel.points("gen_ai.client.operation.time_per_output_chunk")
    assert per_chunk.count >= 4  # one per chunk after the first (the frames are 20 ms apart)
    assert per_chunk.sum >= 0.06


async def test_an_error_sets_status_error_and_error_type(
    dashscope_emulator: DashScopeEmulator, otel: Telemetry
) -> None:
    dashscope_emulator.enqueue(http_error(400, "InvalidParameter", request_id="bad-1"))
    async with otel.client(dashscope_emulator) as client:
        with pytest.raises(BadRequestError):
            await client.generate("hi")
    span = otel.span()
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == "aiotongyi.BadRequestError"
    assert attrs(span)["gen_ai.response.id"] == "bad-1"
    assert [e.name for e in span.events] == ["exception"]
    (duration,) = otel.points("gen_ai.client.operation.duration")
    assert dict(duration.attributes or {})["error.type"] == "aiotongyi.BadRequestError"
    assert otel.points("gen_ai.client.token.usage") == []


async def test_retries_are_events_on_the_one_span(
    dashscope_emulator: DashScopeEmulator, otel: Telemetry
) -> None:
    dashscope_emulator.enqueue(
        http_error(429, "Throttling.RateQuota", retry_after=1), Reply(text="ok", usage=(1, 1))
    )
    async with otel.client(dashscope_emulator) as client:
        assert (await client.generate("hi")).text == "ok"
    span = otel.span()
    assert span.status.status_code is StatusCode.UNSET
    (event,) = span.events
    assert event.name == "aiotongyi.retry"
    assert dict(event.attributes or {}) == {
        "aiotongyi.retry.attempt": 1,
        "aiotongyi.retry.delay": 1.0,
        "error.type": "aiotongyi.RateLimitError",
    }


async def test_early_close_ends_the_span_without_error(
    dashscope_emulator: DashScopeEmulator, otel: Telemetry
) -> None:
    dashscope_emulator.enqueue(Reply(**SLOW))
    async with otel.client(dashscope_emulator) as client:
        async with client.generate_stream("x") as stream:
            async for _ in stream:
                break
        assert len(otel.spans()) == 1
    span = otel.span()
    assert span.status.status_code is StatusCode.UNSET
    assert attrs(span)["aiotongyi.stream.closed_early"] is True
    assert "error.type" not in attrs(span)


async def test_cancellation_and_garbage_collection_each_end_one_span(
    dashscope_emulator: DashScopeEmulator, otel: Telemetry
) -> None:
    dashscope_emulator.enqueue(Reply(**SLOW), Reply(**SLOW))
    async with otel.client(dashscope_emulator) as client:
        started = asyncio.Event()

        async def consume() -> None:
            async for _ in client.generate_stream("x"):
                started.set()

        task = asyncio.create_task(consume())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async for _ in client.generate_stream("y"):
            break
        gc.collect()
        assert await eventually(lambda: len(otel.spans()) == 2)
    cancelled, collected = otel.spans()
    assert attrs(cancelled)["aiotongyi.stream.cancelled"] is True
    assert attrs(collected)["aiotongyi.stream.closed_early"] is True
    for span in (cancelled, collected):
        assert span.status.status_code is StatusCode.UNSET
    await asyncio.sleep(0.05)
    assert len(otel.spans()) == 2  # each ended exactly once


def test_sync_spans_are_children_of_the_calling_threads_span(
    dashscope_emulator: DashScopeEmulator, otel: Telemetry
) -> None:
    dashscope_emulator.enqueue(Reply(text="ab"), Reply(**SLOW))
    tracer = otel.tracer_provider.get_tracer("test")
    with otel.client(dashscope_emulator) as client:
        with tracer.start_as_current_span("handler") as parent:
            assert client.sync_generate("hi").text == "ab"
            for _ in client.sync_generate_stream("x"):
                break
    spans = otel.spans()
    chat = [s for s in spans if s.name == "chat qwen-turbo"]
    assert len(chat) == 2
    for span in chat:
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id
        assert span.context.trace_id == parent.get_span_context().trace_id
        assert "error.type" not in attrs(span)


async def test_async_spans_are_children_of_the_current_span(
    dashscope_emulator: DashScopeEmulator, otel: Telemetry
) -> None:
    dashscope_emulator.enqueue(Reply(text="ab"))
    tracer = otel.tracer_provider.get_tracer("test")
    async with otel.client(dashscope_emulator) as client:
        with tracer.start_as_current_span("handler") as parent:
            await client.generate("hi")
    chat = next(s for s in otel.spans() if s.name.startswith("chat"))
    assert chat.parent is not None
    assert chat.parent.span_id == parent.get_span_context().span_id


async def test_content_is_captured_only_when_opted_in(
    dashscope_emulator: DashScopeEmulator, otel: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    dashscope_emulator.enqueue(Reply(text="pong"))
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    async with otel.client(dashscope_emulator) as client:
        await client.generate(
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ping"}],
            tools=tools,
        )
    got = attrs(otel.span())
    assert json.loads(got["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "be brief"}
    ]
    assert json.loads(got["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "ping"}]}
    ]
    assert json.loads(got["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "pong"}],
            "finish_reason": "stop",
        }
    ]
    assert json.loads(got["gen_ai.tool.definitions"]) == tools


async def test_the_environment_switch(
    dashscope_emulator: DashScopeEmulator, otel: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    dashscope_emulator.enqueue(Reply(text="a"), Reply(text="b"))
    monkeypatch.setenv("AIOTONGYI_TELEMETRY", "0")
    async with otel.client(dashscope_emulator, telemetry=None) as client:
        await client.generate("hi")
    assert otel.spans() == []
    monkeypatch.setenv("AIOTONGYI_TELEMETRY", "1")
    async with otel.client(dashscope_emulator, telemetry=None) as client:
        await client.generate("hi")
    assert len(otel.spans()) == 1


def test_nothing_of_opentelemetry_is_imported_when_telemetry_is_off() -> None:
    code = """
import sys
from aiotongyi import TongyiLLMClient
from aiotongyi.testing import DashScopeEmulator, Reply
with DashScopeEmulator() as emulator:
    emulator.enqueue(Reply(text="x"))
    with TongyiLLMClient(api_key=emulator.api_key, base_url=emulator.base_url) as client:
        client.sync_generate("hi")
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""
    env = {"PATH": "/usr/bin:/bin", "AIOTONGYI_TELEMETRY": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_telemetry_without_the_extra_names_it() -> None:
    code = """
import sys
sys.modules["opentelemetry"] = None  # as if aiotongyi[otel] were not installed
from aiotongyi import TongyiLLMClient
try:
    TongyiLLMClient(api_key="k", telemetry=True)
except ImportError as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "aiotongyi[otel]" in out.stdout


def test_trace_api_is_not_touched_globally(otel: Telemetry) -> None:
    # the client used its own providers: the global tracer provider is still the default proxy
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)


async def test_a_call_refused_by_the_rate_limiter_is_an_error_span(
    dashscope_emulator: DashScopeEmulator, otel: Telemetry
) -> None:
    limiter = RateLimiter(requests_per_minute=1, window=60, max_wait=0.05)
    dashscope_emulator.enqueue(Reply(text="ok"))
    async with otel.client(dashscope_emulator, rate_limit=limiter) as client:
        await client.generate("hi")
        with pytest.raises(RateLimitError):
            await client.generate("hi")
    ok, refused = otel.spans()
    assert ok.status.status_code is StatusCode.UNSET
    assert refused.status.status_code is StatusCode.ERROR
    assert attrs(refused)["error.type"] == "aiotongyi.RateLimitError"
    assert len(dashscope_emulator.requests) == 1


async def test_choice_count_is_set_when_n_is_not_one(
    dashscope_emulator: DashScopeEmulator, otel: Telemetry
) -> None:
    dashscope_emulator.enqueue(Reply(text="a", choices=2), Reply(text="b"))
    async with otel.client(dashscope_emulator) as client:
        async with client.generate_stream("hi", n=2) as stream:
            async for _ in stream:
                pass
        await client.generate("hi", n=1)
    two, one = otel.spans()
    assert attrs(two)["gen_ai.request.choice.count"] == 2
    assert "gen_ai.request.choice.count" not in attrs(one)


async def test_a_non_streamed_operation_gets_its_own_span_name_and_no_stream_attributes(
    otel: Telemetry,
) -> None:
    # How the embeddings call will be observed (the core passes operation and stream).
    from aiotongyi._hooks import ObserverFactory
    from aiotongyi._request import PreparedRequest
    from aiotongyi._telemetry import TelemetryHooks

    hooks = TelemetryHooks(otel.tracer_provider, otel.meter_provider)
    factory = ObserverFactory([hooks], None, "https://dashscope.aliyuncs.com/api/v1")
    body = b'{"model":"text-embedding-v3","input":{"texts":["hi"]},"parameters":{}}'
    request = PreparedRequest("text-embedding-v3", "/services/embeddings", body, False, None)
    observer = factory(request, "embeddings", stream=False)
    await observer.request(0)
    observer.response(200, "rid-e")
    observer.end(None)
    span = otel.span()
    assert span.name == "embeddings text-embedding-v3"
    got = attrs(span)
    assert got["gen_ai.operation.name"] == "embeddings"
    assert got["server.address"] == "dashscope.aliyuncs.com"
    assert got["server.port"] == 443
    assert got["gen_ai.response.id"] == "rid-e"
    assert "gen_ai.request.stream" not in got
    assert "gen_ai.response.time_to_first_chunk" not in got


async def test_embeddings_and_rerank_calls_get_one_span_each(
    otel: Telemetry, dashscope_emulator: DashScopeEmulator
) -> None:
    async with make_client(
        dashscope_emulator,
        telemetry=True,
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
    ) as client:
        await client.embed([f"text {i}" for i in range(25)])  # three parts, one call
        await client.rerank("tea", ["green tea", "black coffee"])
    embed_span, rerank_span = otel.spans()
    assert embed_span.name == "embeddings text-embedding-v4"
    assert attrs(embed_span)["gen_ai.operation.name"] == "embeddings"
    assert rerank_span.name == "rerank gte-rerank-v2"
    assert "gen_ai.request.stream" not in attrs(rerank_span)
