"""Interpreter exit with an unclosed client neither hangs nor prints anything."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from aiotongyi.testing import DashScopeEmulator, Reply

SCRIPT = """
import asyncio, sys
from concurrent.futures import ThreadPoolExecutor
from aiotongyi import TongyiLLMClient
executor = ThreadPoolExecutor(2) if sys.argv[2] == "executor" else None
client = TongyiLLMClient(api_key="k", base_url=sys.argv[1], executor=executor)
print(client.sync_generate("x").text)
if sys.argv[3] == "midstream":
    it = client.sync_generate_stream("y")
    next(it)
asyncio.run(client.generate("z"))
# no close(): exit must still be clean
"""


@pytest.mark.parametrize("executor", ["thread", "executor"])
@pytest.mark.parametrize("where", ["idle", "midstream"])
def test_exit_without_close_is_clean(
    dashscope_emulator: DashScopeEmulator, executor: str, where: str
) -> None:
    dashscope_emulator.enqueue(
        Reply(text=["done"]), Reply(text=[f"t{i}" for i in range(100)], frame_delay=0.05)
    )
    result = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-c",
            textwrap.dedent(SCRIPT),
            dashscope_emulator.base_url,
            executor,
            where,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    assert result.stderr == ""


OLD_STYLE = """
import asyncio, sys
from aiotongyi import TongyiLLMClient
client = TongyiLLMClient(api_key="k", base_url=sys.argv[1])
loop = asyncio.new_event_loop()
print(loop.run_until_complete(client.generate("x")).text)
if sys.argv[2] == "close-loop":
    loop.close()  # without shutdown_asyncgens(): the pool is released on the next use
    print(asyncio.run(client.generate("y")).text)
elif sys.argv[2] == "close-client":
    client.close()  # the loop is idle: close() runs it to close the pool
    loop.close()
elif sys.argv[2] == "aclose-elsewhere":
    asyncio.run(client.aclose())  # cannot run the idle loop from here: closed at exit
# else: the loop stays open and idle until exit
"""


@pytest.mark.parametrize("mode", ["idle-loop", "close-loop", "close-client", "aclose-elsewhere"])
def test_loops_left_open_or_closed_abruptly_leave_no_output(
    dashscope_emulator: DashScopeEmulator, mode: str
) -> None:
    dashscope_emulator.enqueue(Reply(text=["a"]), Reply(text=["b"]))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(OLD_STYLE), dashscope_emulator.base_url, mode],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("a\nb\n" if mode == "close-loop" else "a\n")
    assert result.stderr == ""
