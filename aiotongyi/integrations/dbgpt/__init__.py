"""aiotongyi as a DB-GPT model provider.

A drop-in replacement for DB-GPT's ``dbgpt.model.proxy.llms.tongyi`` client:

* DB-GPT 0.5.x-0.6.x: set ``TONGYI_PROXYLLM_LLM_CLIENT_CLASS`` to
  ``aiotongyi.integrations.dbgpt.TongyiLLMClient``; the worker's own
  ``tongyi_generate_stream`` (or ours, same signature) drives
  :meth:`TongyiLLMClient.sync_generate_stream` from worker threads.
* DB-GPT 0.7+: importing this package registers the ``proxy/aiotongyi``
  provider (:class:`TongyiAioDeployModelParameters`), served on the async path
  by :func:`atongyi_generate_stream`.  DB-GPT only scans its own packages, so
  point a config ``[[hooks]]`` entry at :func:`config_hook` to import it.

Outputs are DB-GPT's own ``ModelOutput``: cumulative ``text``, ``error_code`` 0,
a ``usage`` dict and ``finish_reason``; a failure ends the stream with exactly
one error output (``-1`` and ``"code:message"`` for an :class:`aiotongyi.APIError`,
``1`` otherwise), never an exception.

Modules: ``_client`` (the ``ProxyLLMClient``), ``_outputs`` (DB-GPT outputs),
``_params`` (deploy parameters), ``_provider`` (worker stream functions, the
config hook, registration) and ``embeddings`` (embeddings and rerank).
"""

try:
    import dbgpt.core
    import dbgpt.model.proxy.base  # noqa: F401
except ImportError as _exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "aiotongyi.integrations.dbgpt needs DB-GPT: install it with pip install 'aiotongyi[dbgpt]'"
    ) from _exc

from ._client import TongyiLLMClient
from ._params import PROVIDER, TongyiAioDeployModelParameters
from ._provider import atongyi_generate_stream, config_hook, register, tongyi_generate_stream

register(TongyiLLMClient)

# Embeddings and rerank register under the same provider key (DB-GPT 0.7+).
from . import embeddings as embeddings  # noqa: E402
from ._params import (  # noqa: E402
    TongyiEmbeddingDeployModelParameters,
    TongyiRerankDeployModelParameters,
)
from .embeddings import TongyiEmbeddings, TongyiRerankEmbeddings  # noqa: E402

__all__ = [
    "PROVIDER",
    "TongyiAioDeployModelParameters",
    "TongyiEmbeddingDeployModelParameters",
    "TongyiEmbeddings",
    "TongyiLLMClient",
    "TongyiRerankDeployModelParameters",
    "TongyiRerankEmbeddings",
    "atongyi_generate_stream",
    "config_hook",
    "tongyi_generate_stream",
]
