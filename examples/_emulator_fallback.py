"""Where the examples send their requests: DashScope when a key is set, else the emulator.

With ``DASHSCOPE_API_KEY`` set, ``backend()`` returns ``(None, None, None)``
and the client reads the key (and ``DASHSCOPE_HTTP_BASE_URL``, if set) from the
environment as usual. Without a key it starts aiotongyi's bundled DashScope
emulator on 127.0.0.1, says so on stderr, and returns its key and base URL.
The notice has the same wording as the CLI's. The emulator answers from the request by
simple rules, not as a real model would.
"""

from __future__ import annotations

import atexit
import os
import sys

from aiotongyi.testing import DashScopeEmulator


def backend() -> tuple[str | None, str | None, DashScopeEmulator | None]:
    """``(api_key, base_url, emulator)`` to build a ``TongyiLLMClient`` with."""
    if os.environ.get("DASHSCOPE_API_KEY"):
        return None, None, None
    emulator = DashScopeEmulator().start()
    atexit.register(emulator.stop)
    print(
        "aiotongyi: DASHSCOPE_API_KEY is not set; "
        f"using the bundled emulator at {emulator.base_url} (not a real model)",
        file=sys.stderr,
    )
    return emulator.api_key, emulator.base_url, emulator
