"""A small aiohttp.web app that relays a DashScope stream to the browser as SSE.

    python examples/aiohttp_sse_relay.py [--port 8080] [--once | --exit-after N]

Open the printed URL, type a prompt, and watch the answer stream in. When the
browser goes away (tab closed, EventSource closed), the upstream DashScope
stream is closed too, so nobody pays for tokens no one reads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator

from _emulator_fallback import backend
from aiohttp import web

from aiotongyi import TongyiError, TongyiLLMClient
from aiotongyi.testing import DashScopeEmulator, Reply

POEM = "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>aiotongyi SSE relay</title>
<style>
 body { font: 16px/1.5 system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; }
 #answer { white-space: pre-wrap; border: 1px solid #ccc; padding: 1rem; min-height: 4rem; }
 #thinking { white-space: pre-wrap; color: #888; font-size: 0.9em; }
</style></head>
<body>
<h1>aiotongyi SSE relay</h1>
<form id="ask"><input id="prompt" size="50" value="写一首关于春天的诗">
<button id="send">Send</button> <button id="stop" type="button">Stop</button></form>
<p id="status">idle</p>
<div id="thinking"></div>
<div id="answer"></div>
<script>
let source = null;
const $ = (id) => document.getElementById(id);
function finish(text) {
  if (source) { source.close(); source = null; }
  $("status").textContent = text;
}
$("ask").onsubmit = (event) => {
  event.preventDefault();
  finish("streaming");
  $("answer").textContent = ""; $("thinking").textContent = "";
  source = new EventSource("/stream?prompt=" + encodeURIComponent($("prompt").value));
  source.onmessage = (e) => {
    const data = JSON.parse(e.data);
    $("thinking").textContent += data.thinking;
    $("answer").textContent += data.delta;
  };
  source.addEventListener("done", (e) => finish("done: " + JSON.parse(e.data).finish_reason));
  source.addEventListener("failed", (e) => finish("error: " + JSON.parse(e.data).error));
  source.onerror = () => finish("connection lost");  // never let EventSource reconnect
};
$("stop").onclick = () => finish("stopped");
</script></body></html>
"""


def sse(data: object, event: str | None = None) -> bytes:
    """One SSE event; JSON keeps newlines in the text from ending the event."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class Relay:
    """The app's state and handlers: one client for all requests, closed at shutdown."""

    def __init__(self) -> None:
        self.client: TongyiLLMClient | None = None
        self.emulator: DashScopeEmulator | None = None
        self.finished: asyncio.Queue[str] = asyncio.Queue()

    async def client_context(self, app: web.Application) -> AsyncIterator[None]:
        api_key, base_url, self.emulator = backend()
        async with TongyiLLMClient(model="qwen-plus", api_key=api_key, base_url=base_url) as client:
            self.client = client
            yield

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        prompt = request.query.get("prompt", "").strip() or "你好"
        if self.emulator is not None:  # a longer, slower canned answer shows the streaming
            chunks = [POEM[i : i + 3] for i in range(0, len(POEM), 3)]
            self.emulator.enqueue(Reply(text=[f"({prompt})\n", *chunks], frame_delay=0.05))
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        assert self.client is not None
        outcome = "browser disconnected, upstream stream closed"
        try:
            async with self.client.generate_stream(prompt) as upstream:
                async for output in upstream:
                    if output.delta or output.thinking_delta:
                        data = {"delta": output.delta, "thinking": output.thinking_delta}
                        await response.write(sse(data))
                await response.write(sse({"finish_reason": output.finish_reason}, "done"))
            outcome = f"completed, {len(output.text)} characters"
        except ConnectionResetError:
            pass  # the browser left: leaving `async with` closed the upstream stream
        except TongyiError as exc:
            outcome = f"failed: {type(exc).__name__}: {exc}"
            await response.write(sse({"error": outcome}, "failed"))
        finally:  # also reached on CancelledError (aiohttp < 3.9 cancels the handler)
            print(f"relay {prompt[:20]!r}: {outcome}", flush=True)
            self.finished.put_nowait(outcome)
        return response


async def main(port: int, exit_after: int | None) -> None:
    relay = Relay()
    app = web.Application()
    app.cleanup_ctx.append(relay.client_context)
    app.router.add_get("/", relay.index)
    app.router.add_get("/stream", relay.stream)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"relay listening on http://127.0.0.1:{runner.addresses[0][1]}/", flush=True)
    try:
        relayed = 0
        while exit_after is None or relayed < exit_after:
            await relay.finished.get()
            relayed += 1
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--once", action="store_const", const=1, dest="exit_after")
    group.add_argument("--exit-after", type=int, help="exit after N relayed streams")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.port, args.exit_after))
    except KeyboardInterrupt:
        sys.exit(130)
