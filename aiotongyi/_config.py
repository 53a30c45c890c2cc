"""Client settings resolved once: endpoints, key, headers (no module state)."""

from __future__ import annotations

import logging
import os
import platform
import re
import sys
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohttp

from ._version import __version__

__all__ = [
    "DEFAULT_MODEL",
    "LOG_ENV",
    "MULTIMODAL_PATH",
    "REGIONS",
    "TEXT_PATH",
    "TRANSPORT_HEADERS",
    "WORKSPACE_HEADER",
    "check_base_url",
    "check_header_name",
    "check_header_value",
    "check_proxy_url",
    "configure_logging",
    "mask_key",
    "proxy_from_environment",
    "resolve_api_key",
    "resolve_base_url",
    "resolve_workspace",
    "user_agent",
]

DEFAULT_MODEL = "qwen-turbo"
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # every C0 control but TAB, and DEL
TEXT_PATH = "/services/aigc/text-generation/generation"
MULTIMODAL_PATH = "/services/aigc/multimodal-generation/generation"

# The legacy shared gateways, as the official v2 SDK lists them (its
# eu-central-1 and ap-northeast-1 have no gateway of their own: they use the
# international one).
REGIONS: Mapping[str, str] = {
    "cn-beijing": "https://dashscope.aliyuncs.com/api/v1",
    "ap-southeast-1": "https://dashscope-intl.aliyuncs.com/api/v1",
    "intl": "https://dashscope-intl.aliyuncs.com/api/v1",
    "us-east-1": "https://dashscope-us.aliyuncs.com/api/v1",
    "cn-hongkong": "https://cn-hongkong.dashscope.aliyuncs.com/api/v1",
    "eu-central-1": "https://dashscope-intl.aliyuncs.com/api/v1",
    "ap-northeast-1": "https://dashscope-intl.aliyuncs.com/api/v1",
}
#: The native protocol's path; a base URL may put any prefix before it (gateways).
_NATIVE_SUFFIX = "/api/v1"
WORKSPACE_HEADER = "X-DashScope-WorkSpace"
#: Headers aiohttp writes from the body and connection; a caller's value would
#: contradict them (a wrong Content-Length desynchronises a kept-alive connection).
TRANSPORT_HEADERS = frozenset({"content-length", "transfer-encoding", "host", "connection"})
# RFC 9110 section 5.6.2: token = 1*tchar
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
LOG_ENV = "AIOTONGYI_LOG"
_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def resolve_base_url(base_url: str | None, api_region: str | None) -> str:
    """The first of ``base_url``, ``api_region``, ``DASHSCOPE_HTTP_BASE_URL``,
    ``DASHSCOPE_REGION``, then cn-beijing.

    :raises ValueError: for an unknown region (from either source) or a bad URL.
    """
    if base_url is None and api_region is not None:
        return _region_url(api_region, "api_region")
    if base_url is None:
        base_url = os.environ.get("DASHSCOPE_HTTP_BASE_URL") or None
    if base_url is None:
        region = os.environ.get("DASHSCOPE_REGION") or None
        return REGIONS["cn-beijing"] if region is None else _region_url(region, "DASHSCOPE_REGION")
    return check_base_url(base_url)


def _region_url(region: object, source: str) -> str:
    if not isinstance(region, str) or region.strip().lower() not in REGIONS:
        known = ", ".join(sorted(REGIONS))
        raise ValueError(f"unknown {source} {region!r}; use one of {known}, or pass base_url=")
    return REGIONS[region.strip().lower()]


def check_base_url(base_url: object) -> str:
    """A native ``http(s)://host[/prefix]/api/v1`` URL, normalised (no trailing slash).

    Credentials, a query or a fragment are refused: aiohttp would send the
    userinfo as a second Authorization header, and the message never echoes
    the URL when it may hold a password.

    :raises ValueError: saying what is wrong.
    """
    if not isinstance(base_url, str):
        raise ValueError(f"base_url must be a string, not {type(base_url).__name__}")
    base_url = base_url.strip().rstrip("/")
    check_header_value("base_url", base_url)
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 -- a non-numeric or out-of-range port raises here
    except ValueError as exc:
        raise ValueError(f"base_url is not a valid URL ({exc})") from None
    if "@" in parts.netloc:
        raise ValueError(
            "base_url must not hold a user name or password (user:pass@host); "
            "pass the key as api_key= instead"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http(s) URL ending in /api/v1, not {base_url!r}")
    if parts.query or parts.fragment or base_url.endswith(("?", "#")):
        raise ValueError("base_url must not have a query (?...) or a fragment (#...)")
    if parts.path.endswith("/compatible-mode/v1"):
        raise ValueError(
            "base_url points at DashScope's OpenAI-compatible mode; aiotongyi speaks the native "
            f"protocol: use {parts.scheme}://{parts.netloc}/api/v1 instead"
        )
    if not parts.path.endswith(_NATIVE_SUFFIX):
        hint = f"{parts.scheme}://{parts.netloc}{parts.path}/api/v1"
        raise ValueError(
            f"base_url must end in /api/v1 (the native API), not {base_url!r}; e.g. {hint!r}"
        )
    return base_url


def check_proxy_url(proxy: object) -> str:
    """An explicit proxy: an ``http(s)://`` URL with a host (credentials allowed).

    :raises ValueError: saying what is wrong (never echoing a password).
    """
    if not isinstance(proxy, str):
        raise ValueError(f"proxy must be a string URL, not {type(proxy).__name__}")
    check_header_value("proxy", proxy)
    try:
        parts = urlsplit(proxy.strip())
        parts.port  # noqa: B018 -- validates the port
    except ValueError as exc:
        raise ValueError(f"proxy is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = "<hidden: it holds credentials>" if "@" in proxy else repr(proxy)
        raise ValueError(
            f"proxy must be an http:// or https:// URL with a host, like "
            f"'http://proxy.example:3128', not {shown}"
        )
    return proxy.strip()


def check_header_name(name: object) -> str:
    """A header name a caller may set: an RFC 9110 token the transport does not own.

    :raises ValueError: for a non-string, empty or non-token name, or one of
        Content-Length, Transfer-Encoding, Host, Connection.
    """
    if not isinstance(name, str):
        raise ValueError(f"header names must be strings, not {type(name).__name__}")
    if not _TOKEN.fullmatch(name):
        raise ValueError(
            f"header name {name!r} is not a valid HTTP token (letters, digits and "
            "!#$%&'*+-.^_`|~ only; no spaces, colons or control characters)"
        )
    if name.lower() in TRANSPORT_HEADERS:
        raise ValueError(f"header {name!r} is set by the HTTP transport and cannot be overridden")
    return name


def resolve_workspace(workspace: str | None) -> str | None:
    """The explicit workspace id, else ``DASHSCOPE_WORKSPACE``; ``None`` when neither is set.

    Sent as the ``X-DashScope-WorkSpace`` header.

    :raises ValueError: for a non-string or a value that cannot be a header.
    """
    if workspace is None:
        workspace = os.environ.get("DASHSCOPE_WORKSPACE") or None
    if workspace is None:
        return None
    if not isinstance(workspace, str):
        raise ValueError(f"workspace must be a string, not {type(workspace).__name__}")
    workspace = workspace.strip()
    check_header_value("workspace", workspace)
    return workspace or None


def configure_logging(environ: Mapping[str, str] | None = None) -> logging.Handler | None:
    """Apply ``AIOTONGYI_LOG=debug|info|warning``: the "aiotongyi" logger gets a
    stderr handler at that level.  Nothing happens when the variable is unset.

    Called once when aiotongyi is imported.  Log lines never hold the key.
    Returns the handler added, if any.
    """
    value = (os.environ if environ is None else environ).get(LOG_ENV, "").strip().lower()
    if not value:
        return None
    level = _LOG_LEVELS.get(value)
    if level is None:
        known = "|".join(_LOG_LEVELS)
        sys.stderr.write(f"aiotongyi: ignoring {LOG_ENV}={value!r}; use {known}\n")
        return None
    logger = logging.getLogger("aiotongyi")
    logger.setLevel(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    return handler


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
