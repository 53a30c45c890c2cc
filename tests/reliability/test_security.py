"""Security: the key never leaks, TLS is verified, bad input is refused before any request."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import pathlib
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aiotongyi
from aiotongyi import APIConnectionError, Timeout, TongyiError, TongyiLLMClient
from aiotongyi.testing import DashScopeEmulator, ErrorEvent, Reply, http_error

from .helpers import MODES, run_async, run_async_mode, run_sync_mode

SECRET = "sk-reliability-SECRET-7f3a9c"


# -- the key never leaks -----------------------------------------------------------


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.lines.append(repr(record.args))


@pytest.fixture
def all_logs() -> Iterator[list[str]]:
    """Every log line of every logger, at DEBUG, formatted (with tracebacks) and raw."""
    handler = _Everything()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    # Loggers configured elsewhere with their own level would hide records.
    touched = [
        (logger, logger.level)
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger, _ in touched:
        logger.setLevel(logging.DEBUG)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for logger, level in touched:
            logger.setLevel(level)


def _exception_text(exc: BaseException) -> str:
    """Everything a user could print about an exception, its causes included."""
    parts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current), repr(vars(current))]
        for value in vars(current).values():
            parts.append(repr(value))
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


LEAK_FAULTS = {
    "401": lambda: [http_error(401, "InvalidApiKey", "Invalid API-key provided.")],
    "403_sse": lambda: [http_error(403, body="sse")],
    "500_html_retried": lambda: [http_error(500, body="html", retry_after=0)] * 2,
    "garbage": lambda: [Reply(garbage=b"HTTP/1.1 999 \xff\r\n\r\n")] * 2,
    "reset": lambda: [Reply(reset_before_status=True)] * 2,
    "drop_after_content": lambda: [Reply(text=["a", "b"], drop_after_frames=1)],
    "error_event": lambda: [
        Reply(text=["a"], error_event=ErrorEvent("DataInspectionFailed", "no", 400, 1))
    ],
    "malformed": lambda: [Reply(text=["a", "b"], malformed_frame_at=1)],
    "stall": lambda: [Reply(text=["a", "b"], stall_after_frames=1, stall_seconds=0.5)],
    "ok": lambda: [Reply(text=["fine"])],
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", list(LEAK_FAULTS))
def test_the_key_is_in_no_exception_repr_or_log_line(
    fault: str, mode: str, dashscope_emulator: DashScopeEmulator, all_logs: list[str]
) -> None:
    dashscope_emulator.enqueue(*LEAK_FAULTS[fault]())
    client = TongyiLLMClient(
        api_key=SECRET,
        base_url=dashscope_emulator.base_url,
        timeout=Timeout(connect=1, read=0.2),
        max_retries=1,
    )
    texts = [repr(client), str(client)]
    seen: list[Any] = []
    try:
        if mode in ("stream_with", "stream_bare", "generate"):

            async def main() -> None:
                try:
                    stream = client.generate_stream("hi")
                    texts.append(repr(stream))
                    await run_async_mode(mode, client, seen)
                except TongyiError as exc:
                    texts.append(_exception_text(exc))
                await client.aclose()

            run_async(main)
        else:
            try:
                run_sync_mode(mode, client, seen)
            except TongyiError as exc:
                texts.append(_exception_text(exc))
    finally:
        client.close()
    texts += [repr(output) for output in seen]
    assert dashscope_emulator.requests, "the call must have reached the emulator"
    assert dashscope_emulator.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert fault == "ok" or len(texts) > 2, "the fault must have raised"
    leaked = [text for text in [*texts, *all_logs] if SECRET in text]
    assert not leaked, leaked[0][:500]


def test_the_key_is_not_in_connection_errors(all_logs: list[str]) -> None:
    client = TongyiLLMClient(api_key=SECRET, base_url="http://127.0.0.1:9/api/v1", max_retries=0)

    async def main() -> None:
        with pytest.raises(TongyiError) as info:
            await client.generate("hi")
        await client.aclose()
        assert SECRET not in _exception_text(info.value)

    run_async(main)
    assert not [line for line in all_logs if SECRET in line]


def test_validation_errors_do_not_echo_the_key() -> None:
    # (trailing whitespace is stripped from keys, so the bad bytes sit inside)
    for bad in (SECRET + "\r\nX-Evil: 1", SECRET + "\nX", SECRET + "\0x"):
        with pytest.raises(ValueError) as info:
            TongyiLLMClient(api_key=bad, base_url="http://127.0.0.1:9/api/v1")
        assert SECRET not in _exception_text(info.value)


def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    base.update(env)
    # -X dev: every warning and asyncio debug report on stderr, where the grep sees it.
    return subprocess.run(
        [sys.executable, "-X", "dev", "-m", "aiotongyi", *args],
        capture_output=True,
        text=True,
        env=base,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "script",
    [
        "ok",
        "401",
        "drop_after_content",
        "error_event",
        "malformed",
    ],
)
def test_the_cli_never_prints_the_key(script: str, dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(*LEAK_FAULTS[script]())
    env = {"DASHSCOPE_API_KEY": SECRET, "DASHSCOPE_HTTP_BASE_URL": dashscope_emulator.base_url}
    result = _run_cli("chat", "hi", "--verbose", env=env)
    assert result.returncode == (0 if script == "ok" else 1), result.stderr
    assert dashscope_emulator.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stdout
    assert SECRET not in result.stderr


# -- TLS ------------------------------------------------------------------------------


@pytest.fixture
def self_signed_server(tmp_path: Path) -> Iterator[str]:
    """An HTTPS server on 127.0.0.1 whose certificate nobody trusts."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        stop = threading.Event()

        def serve() -> None:
            listener.settimeout(0.1)
            while not stop.is_set():
                try:
                    raw, _ = listener.accept()
                except OSError:
                    continue
                with raw:
                    try:
                        context.wrap_socket(raw, server_side=True).close()
                    except (ssl.SSLError, OSError):
                        pass  # the client refused the certificate, as it should

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        yield f"https://127.0.0.1:{port}/api/v1"
        stop.set()
        thread.join()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_certificates_are_verified_on_every_call_form(self_signed_server: str) -> None:
    with TongyiLLMClient(api_key="k", base_url=self_signed_server, max_retries=0) as client:
        with pytest.raises(APIConnectionError, match=r"certificate|SSL"):
            client.sync_generate("hi")
        with pytest.raises(APIConnectionError, match=r"certificate|SSL"):
            asyncio.run(client.generate("hi"))


def test_there_is_no_switch_to_disable_tls() -> None:
    names = " ".join(inspect.signature(TongyiLLMClient).parameters).lower()
    assert not re.search(r"ssl|verify|insecure|cert|tls", names), names
    package = pathlib.Path(aiotongyi.__file__).parent
    risky = re.compile(r"ssl\s*=\s*False|verify_ssl|CERT_NONE|check_hostname\s*=\s*False")
    offenders = [
        f"{path.relative_to(package)}:{number}"
        for path in package.rglob("*.py")
        if "testing" not in path.parts
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if risky.search(line)
    ]
    assert not offenders, offenders


def _self_signed(tmp_path: pathlib.Path) -> tuple[str, str]:
    crypto = pytest.importorskip("cryptography")
    del crypto
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def test_a_self_signed_server_is_refused(tmp_path: pathlib.Path) -> None:
    """A TLS server on 127.0.0.1 with an untrusted certificate: the call fails, typed."""
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    handshakes: list[str] = []
    ready = threading.Event()
    port: list[int] = []
    stop: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            handshakes.append("connected")
            writer.close()

        server = await asyncio.start_server(on_client, "127.0.0.1", 0, ssl=context)
        port.append(server.sockets[0].getsockname()[1])
        stop.append(asyncio.get_running_loop())
        ready.set()
        async with server:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                pass

    def run_server() -> None:
        asyncio.run(serve())

    thread = threading.Thread(target=run_server)
    thread.start()
    try:
        assert ready.wait(5)
        client = TongyiLLMClient(
            api_key=SECRET, base_url=f"https://127.0.0.1:{port[0]}/api/v1", max_retries=0
        )

        async def main() -> None:
            with pytest.raises(aiotongyi.APIConnectionError) as info:
                await client.generate("hi")
            await client.aclose()
            text = _exception_text(info.value).lower()
            assert "certificate" in text or "ssl" in text, text[:300]
            assert SECRET not in text

        run_async(main)
        assert not handshakes, "the request must not get past the TLS handshake"
    finally:
        loop = stop[0] if stop else None
        if loop is not None:
            loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(loop)])
        thread.join(10)


# -- input validation before any request ------------------------------------------------

BAD_CALLS: dict[str, tuple[Any, dict[str, Any]]] = {
    "role_unknown": ([{"role": "robot", "content": "hi"}], {}),
    "role_missing": ([{"content": "hi"}], {}),
    "role_not_str": ([{"role": 1, "content": "hi"}], {}),
    "message_not_mapping": (["hi"], {}),
    "content_int": ([{"role": "user", "content": 5}], {}),
    "content_bytes": ([{"role": "user", "content": b"hi"}], {}),
    "content_part_str": ([{"role": "user", "content": ["hi"]}], {}),
    "content_missing": ([{"role": "user"}], {}),
    "no_messages": ([], {}),
    "request_int": (42, {}),
    "temperature_high": ("hi", {"temperature": 2.0}),
    "temperature_negative": ("hi", {"temperature": -0.1}),
    "temperature_nan": ("hi", {"temperature": float("nan")}),
    "temperature_bool": ("hi", {"temperature": True}),
    "temperature_str": ("hi", {"temperature": "0.5"}),
    "top_p_zero": ("hi", {"top_p": 0}),
    "top_p_high": ("hi", {"top_p": 1.01}),
    "top_k_negative": ("hi", {"top_k": -1}),
    "top_k_float": ("hi", {"top_k": 1.5}),
    "max_tokens_zero": ("hi", {"max_tokens": 0}),
    "max_new_tokens_negative": ("hi", {"max_new_tokens": -5}),
    "seed_negative": ("hi", {"seed": -1}),
    "seed_huge": ("hi", {"seed": 2**63}),
    "presence_penalty_high": ("hi", {"presence_penalty": 2.5}),
    "repetition_penalty_zero": ("hi", {"repetition_penalty": 0}),
    "n_five": ("hi", {"n": 5}),
    "stop_mixed": ("hi", {"stop": ["a", 1]}),
    "enable_search_str": ("hi", {"enable_search": "yes"}),
    "tools_str": ("hi", {"tools": "get_weather"}),
    "tool_choice_bad": ("hi", {"tool_choice": "always"}),
    "response_format_bad": ("hi", {"response_format": {"kind": "json"}}),
    "extra_body_list": ("hi", {"extra_body": [1]}),
    "extra_body_unencodable": ("hi", {"extra_body": {"x": object()}}),
    "unknown_param": ("hi", {"temprature": 0.5}),
    "timeout_negative": ("hi", {"timeout": -1}),
    "model_int": ("hi", {"model": 7}),
}


def _call(mode: str, client: TongyiLLMClient, request: Any, params: dict[str, Any]) -> None:
    if mode == "stream_with":

        async def main() -> None:
            async with client.generate_stream(request, **params) as stream:
                async for _ in stream:
                    pass

        asyncio.run(main())
    elif mode == "stream_bare":

        async def main() -> None:
            async for _ in client.generate_stream(request, **params):
                pass

        asyncio.run(main())
    elif mode == "generate":
        asyncio.run(client.generate(request, **params))
    elif mode == "sync_stream":
        for _ in client.sync_generate_stream(request, **params):
            pass
    else:
        client.sync_generate(request, **params)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_is_a_value_error_before_any_request(
    case: str, mode: str, dashscope_emulator: DashScopeEmulator
) -> None:
    request, params = BAD_CALLS[case]
    with TongyiLLMClient(api_key="k", base_url=dashscope_emulator.base_url) as client:
        with pytest.raises(ValueError) as info:
            _call(mode, client, request, params)
    assert not isinstance(info.value, TongyiError)
    assert str(info.value)  # a clear message, not an empty one
    assert dashscope_emulator.connections == 0
    assert not dashscope_emulator.requests


INJECTIONS = {
    "header_value_crlf": {"headers": {"X-Tag": "a\r\nX-Injected: 1"}},
    "header_value_lf": {"headers": {"X-Tag": "a\nX-Injected: 1"}},
    "header_value_cr": {"headers": {"X-Tag": "a\rX-Injected: 1"}},
    "header_value_nul": {"headers": {"X-Tag": "a\0b"}},
    "header_name_crlf": {"headers": {"X-Tag\r\nX-Injected": "1"}},
    "header_name_colon_space": {"headers": {"X-Tag: 1\nX": "1"}},
    "api_key_crlf": {"api_key": "sk-1\r\nX-Injected: 1"},
    "api_key_lf": {"api_key": "sk-1\nX-Injected: 1"},
    "base_url_crlf": {"base_url": "http://127.0.0.1:1/api/v1\r\nX-Injected: 1"},
    "base_url_lf_in_path": {"base_url": "http://127.0.0.1:1/api\n/v1"},
    "proxy_crlf": {"proxy": "http://127.0.0.1:1\r\nX-Injected: 1"},
}


@pytest.mark.parametrize("case", list(INJECTIONS))
def test_header_injection_is_refused_at_construction(
    case: str, dashscope_emulator: DashScopeEmulator
) -> None:
    kwargs: dict[str, Any] = {"api_key": "k", "base_url": dashscope_emulator.base_url}
    kwargs.update(INJECTIONS[case])
    with pytest.raises(ValueError):
        TongyiLLMClient(**kwargs)
    assert not dashscope_emulator.requests


@pytest.mark.parametrize("variable", ["DASHSCOPE_API_KEY", "DASHSCOPE_HTTP_BASE_URL"])
def test_header_injection_through_the_environment_is_refused(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = (
        "sk-1\r\nX-Injected: 1" if variable == "DASHSCOPE_API_KEY" else "http://h/api/v1\r\nX: 1"
    )
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError):
        TongyiLLMClient(**({"base_url": "http://127.0.0.1:1/api/v1"} if "KEY" in variable else {}))


# Control characters other than CR/LF/NUL are just as forbidden in a header value
# (RFC 9110 allows only HTAB among them); aiohttp >= 3.10 refuses DEL at send time
# with a bare ValueError, older aiohttp sends them on the wire. Found here, fixed.
_OTHER_CONTROLS = {f"0x{code:02x}": chr(code) for code in (0x01, 0x0B, 0x0C, 0x1B, 0x7F)}


@pytest.mark.parametrize("where", ["api_key", "header"])
@pytest.mark.parametrize("char", list(_OTHER_CONTROLS))
def test_other_control_characters_are_refused_at_construction(
    char: str, where: str, dashscope_emulator: DashScopeEmulator
) -> None:
    value = "sk-1" + _OTHER_CONTROLS[char] + "2"
    kwargs: dict[str, Any] = {"api_key": "k", "base_url": dashscope_emulator.base_url}
    if where == "api_key":
        kwargs["api_key"] = value
    else:
        kwargs["headers"] = {"X-Tag": value}
    try:
        with pytest.raises(ValueError):
            TongyiLLMClient(**kwargs)
    finally:
        assert not dashscope_emulator.requests
