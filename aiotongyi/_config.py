"""Client settings resolved once: endpoints, key, headers (no module state)."""

from __future__ import annotations

import os
import platform
import re
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohttp

from ._version import __version__

__all__ = [
    "DEFAULT_MODEL",
    "MULTIMODAL_PATH",
    "REGIONS",
    "TEXT_PATH",
    "check_header_value",
    "mask_key",
    "proxy_from_environment",
    "resolve_api_key",
    "resolve_base_url",
    "user_agent",
]

DEFAULT_MODEL = "qwen-turbo"
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # every C0 control but TAB, and DEL
TEXT_PATH = "/services/aigc/text-generation/generation"
MULTIMODAL_PATH = "/services/aigc/multimodal-generation/generation"

REGIONS: Mapping[str, str] = {
    "cn-beijing": "https://dashscope.aliyuncs.com/api/v1",
    "ap-southeast-1": "https://dashscope-intl.aliyuncs.com/api/v1",
    "intl": "https://dashscope-intl.aliyuncs.com/api/v1",
    "us-east-1": "https://dashscope-us.aliyuncs.com/api/v1",
    "cn-hongkong": "https://cn-hongkong.dashscope.aliyuncs.com/api/v1",
}


def resolve_base_url(base_url: str | None, api_region: str | None) -> str:
    """``base_url``, else ``api_region``, else ``DASHSCOPE_HTTP_BASE_URL``, else cn-beijing."""
    if base_url is None and api_region is not None:
        if not isinstance(api_region, str) or api_region.lower() not in REGIONS:
            known = ", ".join(sorted(REGIONS))
            raise ValueError(
                f"unknown api_region {api_region!r}; use one of {known}, or pass base_url="
            )
        return REGIONS[api_region.lower()]
    if base_url is None:
        base_url = os.environ.get("DASHSCOPE_HTTP_BASE_URL") or REGIONS["cn-beijing"]
    if not isinstance(base_url, str):
        raise ValueError(f"base_url must be a string, not {type(base_url).__name__}")
    base_url = base_url.strip().rstrip("/")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http(s) URL ending in /api/v1, not {base_url!r}")
    if parts.path.endswith("/compatible-mode/v1"):
        raise ValueError(
            "base_url points at DashScope's OpenAI-compatible mode; aiotongyi speaks the native "
            f"protocol: use {parts.scheme}://{parts.netloc}/api/v1 instead"
        )
    check_header_value("base_url", base_url)
    return base_url


def resolve_api_key(api_key: str | None) -> str | None:
    """The explicit key, else ``DASHSCOPE_API_KEY``; ``None`` when neither is set."""
    if api_key is None:
        api_key = os.environ.get("DASHSCOPE_API_KEY") or None
    if api_key is None:
        return None
    if not isinstance(api_key, str):
        raise ValueError(f"api_key must be a string, not {type(api_key).__name__}")
    api_key = api_key.strip()
    check_header_value("api_key", api_key)
    return api_key or None


def check_header_value(name: str, value: str) -> None:
    """Refuse control characters: CR/LF would inject headers, the rest is invalid HTTP."""
    if _CONTROL.search(value):
        raise ValueError(f"{name} must not contain control characters (CR, LF, NUL, ...)")


def proxy_from_environment(base_url: str) -> str | None:
    """The proxy the usual variables (``HTTPS_PROXY``, ``NO_PROXY``, ...) choose for ``base_url``.

    Resolved once per client: aiohttp's ``trust_env`` would look it up (and
    read ``~/.netrc``) in a worker thread on every request.
    """
    parts = urlsplit(base_url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def user_agent() -> str:
    return (
        f"aiotongyi/{__version__} python/{platform.python_version()} aiohttp/{aiohttp.__version__}"
    )


def mask_key(api_key: str | None) -> str:
    """Whether a key is set, for reprs; never any of its characters."""
    return "'***'" if api_key else "None"
