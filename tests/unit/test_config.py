"""Client settings checked at construction: URLs, proxies, header names, regions."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from aiotongyi import TongyiLLMClient
from aiotongyi._config import REGIONS, check_header_name, check_proxy_url, resolve_workspace


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DASHSCOPE_HTTP_BASE_URL", "DASHSCOPE_REGION", "DASHSCOPE_WORKSPACE"):
        monkeypatch.delenv(name, raising=False)


def client(**kwargs: object) -> TongyiLLMClient:
    return TongyiLLMClient(api_key="k", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "http://user:hunter2secret@host/api/v1",
        "https://:hunter2secret@host/api/v1",
        "https://user@host/api/v1",
    ],
)
def test_credentials_in_base_url_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ValueError, match="user name or password") as caught:
        client(base_url=url)
    assert "hunter2secret" not in str(caught.value)
    assert "user" not in str(caught.value).split("(")[0].replace("user name", "")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://dashscope.aliyuncs.com", "end in /api/v1"),
        ("https://dashscope.aliyuncs.com/api/v2", "end in /api/v1"),
        ("https://dashscope.aliyuncs.com/api/v1?x=1", "query"),
        ("https://dashscope.aliyuncs.com/api/v1#frag", "fragment"),
        ("https://dashscope.aliyuncs.com/api/v1?", "query"),
        ("ftp://dashscope.aliyuncs.com/api/v1", "http"),
        ("https:///api/v1", "http"),
        ("https://host:99999/api/v1", "not a valid URL"),
        ("https://dashscope.aliyuncs.com/compatible-mode/v1", "compatible"),
    ],
)
def test_bad_base_urls_fail_at_construction(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        client(base_url=url)


def test_any_path_prefix_before_api_v1_is_accepted() -> None:
    url = "https://gateway.example.com/ws-123/dashscope/api/v1/"
    assert client(base_url=url).base_url == url.rstrip("/")


def test_the_env_base_url_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", "http://u:pw@host/api/v1")
    with pytest.raises(ValueError, match="user name or password"):
        client()


@pytest.mark.parametrize("proxy", ["not a url", "socks5://h:1080", "http://", "http://h:x"])
def test_invalid_proxies_fail_at_construction(proxy: str) -> None:
    with pytest.raises(ValueError, match="proxy"):
        client(proxy=proxy)


def test_a_proxy_error_hides_credentials() -> None:
    with pytest.raises(ValueError) as caught:
        check_proxy_url("socks5://me:hunter2secret@h:1080")
    assert "hunter2secret" not in str(caught.value)
    assert check_proxy_url("http://me:pw@proxy.local:3128") == "http://me:pw@proxy.local:3128"


@pytest.mark.parametrize(
    "name", ["X-Trace: evil", "X A", "", "X-\r\nInjected", "Ünïcode", "a\tb", "(x)"]
)
def test_header_names_must_be_tokens(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid HTTP token"):
        client(headers={name: "v"})


@pytest.mark.parametrize(
    "name", ["Content-Length", "content-length", "Transfer-Encoding", "Host", "CONNECTION"]
)
def test_transport_owned_headers_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="set by the HTTP transport"):
        client(headers={name: "5"})


def test_valid_header_names_pass() -> None:
    for name in ("X-Trace-Id", "x_custom", "A!#$%&'*+-.^_`|~1"):
        assert check_header_name(name) == name
    client(headers={"X-Trace-Id": "abc"})


@pytest.mark.parametrize("region", ["eu-central-1", "ap-northeast-1", "cn-hongkong", "intl"])
def test_regions_of_the_official_sdk(region: str) -> None:
    assert client(api_region=region).base_url == REGIONS[region]


def test_dashscope_region_comes_after_the_env_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_REGION", "eu-central-1")
    assert client().base_url == REGIONS["eu-central-1"]
    assert client(api_region="cn-hongkong").base_url == REGIONS["cn-hongkong"]
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", "http://127.0.0.1:1/api/v1")
    assert client().base_url == "http://127.0.0.1:1/api/v1"


def test_an_unknown_region_lists_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="eu-central-1"):
        client(api_region="mars")
    monkeypatch.setenv("DASHSCOPE_REGION", "mars")
    with pytest.raises(ValueError, match=r"DASHSCOPE_REGION 'mars'.*ap-northeast-1"):
        client()


def test_workspace_from_argument_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_workspace(None) is None
    assert resolve_workspace(" ws-1 ") == "ws-1"
    monkeypatch.setenv("DASHSCOPE_WORKSPACE", "ws-env")
    assert resolve_workspace(None) == "ws-env"
    assert resolve_workspace("ws-arg") == "ws-arg"
    with pytest.raises(ValueError, match="workspace"):
        resolve_workspace("ws\r\nX-Evil: 1")


def logger_state(level: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "AIOTONGYI_LOG"}
    if level is not None:
        env["AIOTONGYI_LOG"] = level
    code = (
        "import logging, aiotongyi; log = logging.getLogger('aiotongyi'); "
        "print(logging.getLevelName(log.level), len(log.handlers))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip() + "|" + result.stderr.strip()


def test_the_logging_switch() -> None:
    assert logger_state(None) == "NOTSET 0|"
    assert logger_state("debug") == "DEBUG 1|"
    assert logger_state("INFO") == "INFO 1|"
    assert logger_state("loud").startswith("NOTSET 0|aiotongyi: ignoring AIOTONGYI_LOG='loud'")
