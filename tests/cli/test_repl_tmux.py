"""The interactive chat in a real terminal: tmux runs it, we type keys and read the screen."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aiotongyi.testing import DashScopeEmulator, Reply

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"
)


class Terminal:
    """One tmux session on a private server socket."""

    def __init__(self, command: list[str], socket: Path) -> None:
        self.socket = str(socket)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
        env["TERM"] = "xterm-256color"
        self.tmux(
            "new-session", "-d", "-s", "t", "-x", "120", "-y", "40", shlex.join(command), env=env
        )

    def tmux(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            ["tmux", "-S", self.socket, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=10,
            check=False,
        )
        return result.stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "t", "-l", text)

    def screen(self, escapes: bool = False) -> str:
        return self.tmux("capture-pane", "-p", *(["-e"] if escapes else []), "-t", "t")

    def alive(self) -> bool:
        return (
            subprocess.run(
                ["tmux", "-S", self.socket, "has-session", "-t", "t"],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )

    def wait_for(self, check: Callable[[str], bool], timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if check(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"the terminal never showed it; screen:\n{screen}")
            time.sleep(0.1)

    def close(self) -> None:
        self.tmux("kill-server")


@pytest.fixture
def terminal(dashscope_emulator: DashScopeEmulator, tmp_path: Path) -> Iterator[Terminal]:
    command = [sys.executable, "-m", "aiotongyi", "chat", "--base-url"]
    term = Terminal(
        [*command, dashscope_emulator.base_url, "--thinking", "--verbose"], tmp_path / "tmux"
    )
    try:
        term.wait_for(lambda screen: "/help lists the commands" in screen)
        yield term
    finally:
        term.close()


def test_two_turns_line_editing_and_ctrl_d(
    terminal: Terminal, dashscope_emulator: DashScopeEmulator
) -> None:
    terminal.type("hello one")
    terminal.keys("Enter")
    terminal.wait_for(lambda s: "Hello! You said: hello one" in s and "usage=" in s)
    terminal.type("world")
    terminal.keys("C-a")  # readline: to the start of the line
    terminal.type("second ")
    terminal.keys("Enter")
    terminal.wait_for(lambda s: "Hello! You said: second world" in s)
    history = dashscope_emulator.requests[1].json["input"]["messages"]
    assert [m["content"] for m in history] == [
        "hello one",
        "Hello! You said: hello one",
        "second world",
    ]
    terminal.keys("C-d")
    deadline = time.monotonic() + 10
    while terminal.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not terminal.alive()


def test_thinking_is_dimmed_on_its_own_line(
    terminal: Terminal, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(thinking=["pondering"], text=["forty-two"]))
    terminal.type("question")
    terminal.keys("Enter")
    screen = terminal.wait_for(lambda s: "forty-two" in s)
    lines = screen.splitlines()
    assert lines[lines.index("pondering") + 1] == "forty-two"
    assert "\x1b[2mpondering" in terminal.screen(escapes=True)


def test_ctrl_c_cancels_the_answer(
    terminal: Terminal, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["Slow"] + [" word"] * 100, frame_delay=0.1))
    terminal.type("go slowly")
    terminal.keys("Enter")
    terminal.wait_for(lambda s: "Slow word" in s)
    terminal.keys("C-c")
    screen = terminal.wait_for(lambda s: "[answer cancelled]" in s)
    assert "Traceback" not in screen
    assert dashscope_emulator.wait_for_open_connections(0, timeout=5)
    terminal.type("next")
    terminal.keys("Enter")
    terminal.wait_for(lambda s: "Hello! You said: next" in s)
    assert dashscope_emulator.requests[1].json["input"]["messages"] == [
        {"role": "user", "content": "next"}
    ]
