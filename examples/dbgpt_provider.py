"""aiotongyi as a DB-GPT model provider (DB-GPT 0.8 config, 0.5/0.6 worker, library use).

Needs ``pip install "aiotongyi[dbgpt]"``.  With ``DASHSCOPE_API_KEY`` set it
calls DashScope; without it, it starts aiotongyi's local emulator and says so.

    python examples/dbgpt_provider.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

try:
    with warnings.catch_warnings():  # DB-GPT's own imports warn about its dependencies
        warnings.simplefilter("ignore")
        from dbgpt.core import ModelMessage, ModelRequest
        from dbgpt.model.adapter.base import get_model_adapter
        from dbgpt.model.parameter import ModelsDeployParameters
        from dbgpt.util.configure import ConfigurationManager
        from dbgpt.util.parameter_utils import BaseParameters
except ImportError:
    sys.exit("this example needs DB-GPT: pip install 'aiotongyi[dbgpt]'")

# What a DB-GPT 0.8 config file adds (next to its [system], [service], ...).
# The hook imports aiotongyi.integrations.dbgpt before [[models.llms]] is
# parsed, which registers the "proxy/aiotongyi" provider.
CONFIG = """
[[hooks]]
path = "aiotongyi.integrations.dbgpt.config_hook"

[models]
[[models.llms]]
name = "qwen-plus"
provider = "proxy/aiotongyi"
api_key = "${env:DASHSCOPE_API_KEY}"
# api_region = "ap-southeast-1"   # or api_base = "https://dashscope-intl.aliyuncs.com/api/v1"
"""


@dataclass
class AppConfig(BaseParameters):  # type: ignore[misc]  # DB-GPT ships no type hints
    """Stands in for dbgpt_app's ApplicationConfig, which parses the file the same way."""

    models: ModelsDeployParameters = field(default_factory=ModelsDeployParameters)


def load_provider_model(config_text: str) -> object:
    """Parse the config as DB-GPT does and load the model through its adapter."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dbgpt-aiotongyi.toml"
        path.write_text(config_text)
        config = ConfigurationManager.from_file(str(path))
        app = config.parse_config(AppConfig, hook_section="hooks")
    llm = app.models.llms[0]
    adapter = get_model_adapter(llm.provider, llm.name)
    model, _ = adapter.load_from_params(llm)
    print(f"provider {llm.provider}: {type(llm).__name__} -> {model.proxy_llm_client!r}")
    return model


async def serve_like_dbgpt_08(model: object) -> None:
    """DB-GPT 0.8's worker calls the provider's async stream function per request."""
    from aiotongyi.integrations.dbgpt import TongyiLLMClient

    generate_stream = TongyiLLMClient.generate_stream_function()
    params = {
        "messages": [ModelMessage(role="human", content="Name three rivers in China.")],
        "temperature": 0.7,
        "max_new_tokens": 200,
    }
    previous = ""
    async for output in generate_stream(model, None, params, "cpu", 4096):  # type: ignore[operator]
        if output.error_code != 0:
            print(f"\nerror {output.error_code}: {output.text}")
            return
        print(output.text[len(previous) :], end="", flush=True)  # text is cumulative
        previous = output.text
    print(f"\n  usage: {output.usage}")
    await model.proxy_llm_client.aclose()  # type: ignore[attr-defined]


def serve_like_dbgpt_06() -> None:
    """DB-GPT 0.5/0.6: new_client(ProxyModelParameters) and the sync stream function."""
    from aiotongyi.integrations.dbgpt import TongyiLLMClient, tongyi_generate_stream

    params = SimpleNamespace(  # the fields DB-GPT 0.5/0.6 fills from TONGYI_PROXY_* env vars
        proxyllm_backend="qwen-plus",
        proxy_api_key=os.environ["DASHSCOPE_API_KEY"],
        proxy_api_base=os.environ.get("DASHSCOPE_HTTP_BASE_URL"),
        model_name="tongyi_proxyllm",
        max_context_size=8192,
    )
    client = TongyiLLMClient.new_client(params)
    model = SimpleNamespace(proxy_llm_client=client)  # DB-GPT's ProxyModel
    worker_params = {"messages": [ModelMessage(role="human", content="Say hi.")]}
    outputs = list(tongyi_generate_stream(model, None, worker_params, "cpu"))
    print(f"0.5/0.6 path: {outputs[-1].text!r} (error_code {outputs[-1].error_code})")
    client.close()


async def use_as_library() -> None:
    """Any DB-GPT code that takes an LLMClient (AWEL operators, agents) can take this one."""
    from aiotongyi.integrations.dbgpt import TongyiLLMClient

    client = TongyiLLMClient(model="qwen-plus")
    request = ModelRequest.build_request(
        "qwen-plus", messages=[ModelMessage(role="human", content="1 + 1 = ?")]
    )
    output = await client.generate(request)
    print(f"library: error_code={output.error_code} text={output.text!r}")
    await client.aclose()


def main() -> None:
    with ExitStack() as stack:
        if not os.environ.get("DASHSCOPE_API_KEY"):
            from aiotongyi.testing import DashScopeEmulator

            emulator = stack.enter_context(DashScopeEmulator())
            print(
                "aiotongyi: DASHSCOPE_API_KEY is not set; "
                f"using the bundled emulator at {emulator.base_url} (not a real model)",
                file=sys.stderr,
            )
            os.environ["DASHSCOPE_API_KEY"] = emulator.api_key
            os.environ["DASHSCOPE_HTTP_BASE_URL"] = emulator.base_url
        model = load_provider_model(CONFIG)
        asyncio.run(serve_like_dbgpt_08(model))
        serve_like_dbgpt_06()
        asyncio.run(use_as_library())


if __name__ == "__main__":
    main()
