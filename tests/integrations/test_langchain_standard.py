"""LangChain's own standard suites (langchain-tests 1.1.x) for ``ChatTongyi``.

The integration suite runs against the bundled emulator, which infers its
answers from the request (tools, tool_choice, response_format, ...), so the
tool-calling, structured-output and JSON-mode tests are real round trips.
Skipped where langchain-tests is not installed (the default venv); the
``.ci/langchain.sh`` job installs it and requires these to run.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

if not os.environ.get("AIOTONGYI_REQUIRE_LANGCHAIN"):
    pytest.importorskip("langchain_tests", reason="needs langchain-tests (.ci/langchain.sh)")

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_tests.integration_tests import (
    ChatModelIntegrationTests,
    EmbeddingsIntegrationTests,
)
from langchain_tests.unit_tests import ChatModelUnitTests, EmbeddingsUnitTests

from aiotongyi.integrations.langchain import ChatTongyi, DashScopeEmbeddings
from aiotongyi.testing import DashScopeEmulator


class TestChatTongyiUnit(ChatModelUnitTests):
    """``is_lc_serializable`` stays false (its test skips): langchain-core's loader only
    builds its own and its partners' classes, so the round trip could not pass."""

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatTongyi

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "qwen-plus"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return {"DASHSCOPE_API_KEY": "sk-from-env"}, {}, {"api_key": "sk-from-env"}

    @property
    def supports_json_mode(self) -> bool:
        return True


class TestChatTongyiIntegration(ChatModelIntegrationTests):
    """Feature flags left off, each skipping its tests with the suite's reason:
    image and audio inputs (the tests download media from the internet, which
    these tests never reach; vision and audio models take them through aiotongyi's
    content parts), images and PDFs in tool messages and PDF inputs (DashScope has
    neither), and the VCR cassette benchmark (nothing to record against the emulator).
    """

    base_url = ""
    api_key = ""

    @pytest.fixture(autouse=True)
    def _on_the_emulator(self, dashscope_emulator: DashScopeEmulator) -> None:
        self.base_url = dashscope_emulator.base_url
        self.api_key = dashscope_emulator.api_key

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatTongyi

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "qwen-plus", "base_url": self.base_url, "api_key": self.api_key}

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str | None:
        return "qwen-max"

    @property
    def supports_anthropic_inputs(self) -> bool:
        return True

    @property
    def supported_usage_metadata_details(self) -> dict[Any, list[Any]]:
        return {"invoke": ["reasoning_output"], "stream": ["reasoning_output"]}

    def invoke_with_reasoning_output(self, *, stream: bool = False) -> AIMessage:
        model = ChatTongyi(**self.chat_model_params, model_kwargs={"enable_thinking": True})
        prompt = "What is 3^3? Think it through."
        if not stream:
            message = model.invoke(prompt)
            assert isinstance(message, AIMessage)
            return message
        full: Any = None
        for chunk in model.stream(prompt):
            full = chunk if full is None else full + chunk
        assert isinstance(full, AIMessage)
        return full


class TestDashScopeEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[Embeddings]:
        return DashScopeEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": "text-embedding-v4"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return {"DASHSCOPE_API_KEY": "sk-from-env"}, {}, {"api_key": "sk-from-env"}


class TestDashScopeEmbeddingsIntegration(EmbeddingsIntegrationTests):
    """On the emulator: vectors derived from each text (same text, same vector)."""

    base_url = ""
    api_key = ""

    @pytest.fixture(autouse=True)
    def _on_the_emulator(self, dashscope_emulator: DashScopeEmulator) -> None:
        self.base_url = dashscope_emulator.base_url
        self.api_key = dashscope_emulator.api_key

    @property
    def embeddings_class(self) -> type[Embeddings]:
        return DashScopeEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": "text-embedding-v4", "base_url": self.base_url, "api_key": self.api_key}
