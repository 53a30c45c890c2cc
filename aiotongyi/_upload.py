"""Upload local media to DashScope's temporary storage, as the official SDKs do.

The protocol (dashscope's ``OssUtils``): ``GET {base}/uploads?action=getPolicy&model=M``
answers ``{"data": {policy, signature, upload_dir, upload_host, oss_access_key_id,
x_oss_object_acl, x_oss_forbid_overwrite, expire_in_seconds, ...}}``; the file is
then POSTed as a multipart form to ``upload_host`` (an OSS bucket) under the key
``upload_dir/<file name>``, and the request refers to it as ``oss://<key>`` with
``X-DashScope-OssResourceResolve: enable``.  The service deletes uploads after
48 hours.

The form is streamed from disk (aiohttp reads the file in 64 KiB pieces on a
worker thread), so a large video is never held in memory.  Each client keeps
the URLs it uploaded, keyed by account, model and content hash.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import email.utils
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import aiohttp
from aiohttp import hdrs, payload

from ._call import TRANSPORT_ERRORS, Call, map_transport_error, scrub
from ._errors import api_error
from ._exceptions import APIError, ProtocolError, TongyiError
from ._media import LocalFile
from ._models import Timeout
from ._request import PreparedRequest, finish_uploads
from ._retry import retry_delay, should_retry
from ._transport import MAX_JSON_BODY, SecretHeaders, read_body, read_error

__all__ = ["POLICY_PATH", "URL_LIFETIME", "UploadCache", "cache_for", "resolve_uploads"]

logger = logging.getLogger("aiotongyi")

POLICY_PATH = "/uploads"
#: Seconds an uploaded file lives in temporary storage.
URL_LIFETIME = 48 * 3600.0
# A cached URL is reused only while a call still has an hour to use it.
_REUSE_WINDOW = URL_LIFETIME - 3600.0
# A policy this close to its expiry is not used to start a POST.
_POLICY_MARGIN = 10.0
_HASH_CHUNK = 1 << 20
_POLICY_FIELDS = (
    "policy",
    "signature",
    "upload_dir",
    "upload_host",
    "oss_access_key_id",
    "x_oss_object_acl",
    "x_oss_forbid_overwrite",
)
#: How much of OSS's success reply is read (it is not used).
_OSS_REPLY_BYTES = 64 * 1024
# Headers of the chat request that mean nothing to the policy endpoint.
_CHAT_ONLY = frozenset(
    {"content-type", "accept", "x-dashscope-sse", "x-dashscope-ossresourceresolve"}
)
_XML_FIELD = re.compile(r"<(Code|Message|RequestId)>([^<]*)</\1>")
# aiohttp < 3.9 starts the read timeout before the body is written, so an upload
# longer than Timeout.read would fail there: its POST waits on the total only.
_READ_TIMEOUT_AFTER_BODY = tuple(map(int, aiohttp.__version__.split(".")[:2])) >= (3, 9)


@dataclasses.dataclass(frozen=True, slots=True)
class _Policy:
    """One upload certificate; ``expires`` is on the event loop's clock."""

    fields: Mapping[str, str]
    expires: float
    used: set[str] = dataclasses.field(default_factory=set)  # names stored under it

    @property
    def upload_dir(self) -> str:
        return self.fields["upload_dir"]

    @property
    def upload_host(self) -> str:
        return self.fields["upload_host"]


class UploadCache:
    """The ``oss://`` URLs one client uploaded, and the content hashes of local files.

    Thread-safe: a client is used from its own loop thread and the caller's loops.

    :param lifetime: seconds an entry is reused (less than the 48 h the file lives).
    :param max_entries: the oldest entries go beyond this many.
    :param clock: wall-clock seconds (uploads expire in wall time, suspend included).
    """

    def __init__(
        self,
        *,
        lifetime: float = _REUSE_WINDOW,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lifetime = lifetime
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._urls: collections.OrderedDict[tuple[str, str, str], tuple[str, float]] = (
            collections.OrderedDict()
        )
        self._digests: collections.OrderedDict[tuple[object, ...], str] = collections.OrderedDict()

    def get(self, key: tuple[str, str, str]) -> str | None:
        """The URL stored for ``(account, model, sha256)``, while it is still usable."""
        with self._lock:
            entry = self._urls.get(key)
            if entry is None:
                return None
            url, stored = entry
            if self._clock() - stored >= self.lifetime:
                del self._urls[key]
                return None
            return url

    def put(self, key: tuple[str, str, str], url: str) -> None:
        with self._lock:
            self._urls[key] = (url, self._clock())
            self._urls.move_to_end(key)
            while len(self._urls) > self.max_entries:
                self._urls.popitem(last=False)

    def known_digest(self, identity: tuple[object, ...]) -> str | None:
        with self._lock:
            return self._digests.get(identity)

    def remember_digest(self, identity: tuple[object, ...], digest: str) -> None:
        with self._lock:
            self._digests[identity] = digest
            while len(self._digests) > self.max_entries:
                self._digests.popitem(last=False)


_caches: weakref.WeakKeyDictionary[object, UploadCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def cache_for(owner: object) -> UploadCache:
    """The upload cache of ``owner`` (a client), created on first use."""
    with _caches_lock:
        cache = _caches.get(owner)
        if cache is None:
            cache = _caches[owner] = UploadCache()
        return cache


async def resolve_uploads(
    request: PreparedRequest,
    *,
    session: aiohttp.ClientSession,
    base_url: str,
    headers: Mapping[str, str],
    proxy: str | None,
    timeout: Timeout,
    deadline: float | None,
    max_retries: int,
    cache: UploadCache,
    call: Call | None = None,
) -> PreparedRequest:
    """Upload ``request.uploads`` (or reuse earlier uploads) and finish the request.

    :param headers: the headers the chat request would send (key, user agent,
        workspace, the caller's extras); the policy request sends them, OSS gets
        none of them.
    :param deadline: the call's total deadline on the running loop's clock.
    :param call: the call whose idle-read timer covers the waits for the
        service (the policy request, each reply's body), not the file's upload.
    :raises APIError: the policy endpoint or OSS said no (OSS's error code kept).
    :raises APIConnectionError: a connection failed or timed out after the retries.
    :raises ProtocolError: the policy reply was not what the protocol says.
    :raises ValueError: a local file vanished or cannot be read.
    """
    if not request.uploads:
        return request
    api_headers = _policy_headers(headers, request.headers)
    uploader = _Uploader(
        session, base_url, api_headers, proxy, timeout, deadline, max_retries, request.model, call
    )
    account = _account(base_url, api_headers)
    urls: dict[LocalFile, str] = {}
    for file in request.uploads:
        key = (account, request.model, await _digest(file, cache))
        url = cache.get(key)
        if url is None:
            url = await uploader.upload(file)
            cache.put(key, url)
        else:
            logger.debug("reusing the upload of %s: %s", file.name, url)
        urls[file] = url
    return finish_uploads(request, urls)


def _policy_headers(headers: Mapping[str, str], extra: Mapping[str, str]) -> SecretHeaders:
    """The chat headers the policy request sends, with the SDK's ``Accept``.

    A function of its own, returning a masked mapping: a frame that stays on an
    error's traceback (the caller's) must hold no plain copy of the key.
    """
    merged = {name.lower(): (name, value) for name, value in headers.items()}
    merged.update((name.lower(), (name, value)) for name, value in extra.items())
    api_headers = SecretHeaders(
        {name: value for key, (name, value) in merged.items() if key not in _CHAT_ONLY}
    )
    api_headers["Accept"] = "application/json; charset=utf-8"  # the SDK's, exactly
    return api_headers


def _account(base_url: str, headers: Mapping[str, str]) -> str:
    """Who owns an upload: endpoint, key and workspace, hashed (the key is never stored)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    owner = "\n".join(
        (base_url, lowered.get("authorization", ""), lowered.get("x-dashscope-workspace", ""))
    )
    return hashlib.sha256(owner.encode()).hexdigest()


async def _digest(file: LocalFile, cache: UploadCache) -> str:
    """SHA-256 of the content, on a worker thread; a file unchanged since is not re-read."""
    if file.data is not None:
        if len(file.data) <= _HASH_CHUNK:
            return hashlib.sha256(file.data).hexdigest()
        return await asyncio.to_thread(lambda: hashlib.sha256(file.data or b"").hexdigest())
    assert file.path is not None
    path = file.path

    def stat_and_hash() -> str:
        try:
            info = path.stat()
            # ctime changes on every write and cannot be set back, unlike mtime.
            identity = (
                os.fspath(path),
                info.st_ino,
                info.st_size,
                info.st_mtime_ns,
                info.st_ctime_ns,
            )
            known = cache.known_digest(identity)
            if known is not None:
                return known
            digest = hashlib.sha256()
            with path.open("rb") as stream:
                while chunk := stream.read(_HASH_CHUNK):
                    digest.update(chunk)
        except OSError as exc:
            raise ValueError(f"{file.name} cannot be read for upload: {exc}") from None
        cache.remember_digest(identity, digest.hexdigest())
        return digest.hexdigest()

    return await asyncio.to_thread(stat_and_hash)


class _Uploader:
    """One call's uploads: a policy reused while fresh, retries with a new one."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        headers: Mapping[str, str],
        proxy: str | None,
        timeout: Timeout,
        deadline: float | None,
        max_retries: int,
        model: str,
        call: Call | None = None,
    ) -> None:
        self._call = call
        self._session = session
        self._base_url = base_url
        self._headers = headers
        self._proxy = proxy
        self._timeout = timeout
        self._deadline = deadline
        self._max_retries = max_retries
        self._model = model
        self._loop = asyncio.get_running_loop()
        self._policy: _Policy | None = None

    async def upload(self, file: LocalFile) -> str:
        attempt = 0
        while True:
            outcome = await self._once(file)
            if isinstance(outcome, str):
                return outcome
            # The POST may have stored the object: a retry needs a new upload_dir
            # (x-oss-forbid-overwrite would refuse the same key).
            self._policy = None
            if attempt >= self._max_retries or not _retryable(outcome):
                raise outcome
            delay = retry_delay(attempt, getattr(outcome, "headers", None), random.random())
            if self._deadline is not None and self._loop.time() + delay >= self._deadline:
                raise outcome
            logger.debug("retrying the upload of %s in %.2f s after %s", file.name, delay, outcome)
            await asyncio.sleep(delay)
            attempt += 1

    async def _once(self, file: LocalFile) -> str | TongyiError:
        """One attempt: the URL, or the error to retry or raise."""
        try:
            policy = await self._fresh_policy(file.name)
            url = await self._post(policy, file)
        except TongyiError as error:
            return error
        policy.used.add(file.name)
        return url

    async def _fresh_policy(self, name: str) -> _Policy:
        policy = self._policy
        if (
            policy is None
            or name in policy.used  # the same key again: forbid-overwrite says no
            or self._loop.time() >= policy.expires - _POLICY_MARGIN
        ):
            policy = self._policy = await self._get_policy()
        return policy

    def _client_timeout(self, *, body: bool = False) -> aiohttp.ClientTimeout:
        remaining = None
        if self._deadline is not None:
            remaining = max(self._deadline - self._loop.time(), 0.001)
        read = self._timeout.read if _READ_TIMEOUT_AFTER_BODY or not body else None
        return aiohttp.ClientTimeout(
            total=remaining, sock_connect=self._timeout.connect, sock_read=read
        )

    async def _get_policy(self) -> _Policy:
        url = self._base_url + POLICY_PATH
        started = self._loop.time()
        call = self._call
        if call is not None:  # waiting for the service: its silence counts (aiohttp's
            call.reading = True  # sock_read alone can be defeated by a malformed chunk)
            call.last_data = started
        try:
            async with self._session.get(
                url,
                params={"action": "getPolicy", "model": self._model},
                headers=self._headers,
                proxy=self._proxy,
                allow_redirects=False,
                timeout=self._client_timeout(),
            ) as response:
                request_id = response.headers.get("x-request-id")
                if response.status >= 300:
                    raise await read_error(response, request_id, call)
                body = await read_body(response, MAX_JSON_BODY, truncate=False, call=call)
        except TRANSPORT_ERRORS as exc:
            raise self._transport_error(exc) from scrub(exc)
        finally:
            if call is not None:
                call.reading = False
        return _parse_policy(body, request_id, started)

    async def _post(self, policy: _Policy, file: LocalFile) -> str:
        key = f"{policy.upload_dir}/{file.name}"
        fields = (
            ("OSSAccessKeyId", policy.fields["oss_access_key_id"]),
            ("Signature", policy.fields["signature"]),
            ("policy", policy.fields["policy"]),
            ("key", key),
            ("x-oss-object-acl", policy.fields["x_oss_object_acl"]),
            ("x-oss-forbid-overwrite", policy.fields["x_oss_forbid_overwrite"]),
            ("success_action_status", "200"),
            ("x-oss-content-type", file.mime),
        )
        # OSS gets neither the API key nor the caller's headers: only what the SDK sends.
        headers = {
            "User-Agent": _value(self._headers, "user-agent"),
            "Accept": "application/json",
            "Date": email.utils.formatdate(usegmt=True),
        }
        stream = await _open(file)
        try:
            form = _form(fields, file, stream)
            async with self._session.post(
                policy.upload_host,
                data=form,
                headers=headers,
                proxy=self._proxy,
                allow_redirects=False,
                timeout=self._client_timeout(body=True),
            ) as response:
                if response.status >= 300:
                    raise await _oss_error(response, file.name)
                # The reply is not used: read a bounded part, under the idle-read timer.
                call = self._call
                if call is not None:
                    call.reading = True
                    call.last_data = self._loop.time()
                try:
                    await read_body(response, _OSS_REPLY_BYTES, truncate=True, call=call)
                finally:
                    if call is not None:
                        call.reading = False
        except TRANSPORT_ERRORS as exc:
            raise self._transport_error(exc) from scrub(exc)
        finally:
            if stream is not None:
                await asyncio.to_thread(stream.close)
        logger.debug("uploaded %s (%d bytes) as oss://%s", file.name, file.size, key)
        return f"oss://{key}"

    def _transport_error(self, exc: BaseException) -> TongyiError:
        expired = self._deadline is not None and self._loop.time() >= self._deadline - 0.001
        return map_transport_error(exc, total_expired=expired)


def _value(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return ""


def _retryable(error: TongyiError) -> bool:
    # An expired policy is fixed by asking for a new one, whatever the status.
    if isinstance(error, APIError) and "policy expired" in error.message.lower():
        return True
    return should_retry(error)


async def _open(file: LocalFile) -> BinaryIO | None:
    if file.path is None:
        return None
    try:
        return await asyncio.to_thread(file.path.open, "rb")
    except OSError as exc:
        raise ValueError(f"{file.name} cannot be read for upload: {exc}") from None


def _form(
    fields: tuple[tuple[str, str], ...], file: LocalFile, stream: BinaryIO | None
) -> aiohttp.MultipartWriter:
    """The form the SDK's ``requests`` sends: plain fields, then the file (no part types)."""
    writer = aiohttp.MultipartWriter("form-data")
    for name, value in fields:
        part: payload.Payload = payload.StringPayload(value)
        del part.headers[hdrs.CONTENT_TYPE]
        part.set_content_disposition("form-data", quote_fields=False, name=name)
        writer.append_payload(part)
    if stream is not None:
        # Read 64 KiB at a time on a worker thread; its size gives Content-Length.
        part = payload.BufferedReaderPayload(stream)
    else:
        assert file.data is not None
        part = payload.BytesPayload(file.data)
    del part.headers[hdrs.CONTENT_TYPE]
    part.set_content_disposition("form-data", quote_fields=False, name="file", filename=file.name)
    writer.append_payload(part)
    return writer


def _parse_policy(body: bytes, request_id: str | None, started: float) -> _Policy:
    try:
        reply: Any = json.loads(body)
    except ValueError:
        reply = None
    data = reply.get("data") if isinstance(reply, dict) else None
    if isinstance(reply, dict) and request_id is None:
        rid = reply.get("request_id")
        request_id = rid if isinstance(rid, str) else None
    if not isinstance(data, dict):
        if isinstance(reply, dict) and reply.get("code"):
            raise api_error(None, str(reply["code"]), str(reply.get("message", "")), request_id)
        raise ProtocolError("the upload policy reply has no data object", request_id=request_id)
    missing = [name for name in _POLICY_FIELDS if not isinstance(data.get(name), str | bool)]
    if missing:
        raise ProtocolError(
            f"the upload policy reply lacks {', '.join(missing)}", request_id=request_id
        )
    fields = {name: _text(data[name]) for name in _POLICY_FIELDS}
    try:
        lifetime = float(data.get("expire_in_seconds", 300))
    except (TypeError, ValueError):
        lifetime = 300.0
    return _Policy(fields, started + lifetime)


def _text(value: str | bool) -> str:
    if isinstance(value, bool):  # a JSON true means the form's "true"
        return "true" if value else "false"
    return value


async def _oss_error(response: aiohttp.ClientResponse, name: str) -> APIError:
    """OSS answers with XML: ``<Error><Code>…</Code><Message>…</Message><RequestId>…``."""
    try:
        body = await response.content.read(64 * 1024)
    except TRANSPORT_ERRORS:
        body = b""
    found = dict(_XML_FIELD.findall(body.decode("utf-8", "replace")))
    request_id = found.get("RequestId") or response.headers.get("x-oss-request-id")
    message = found.get("Message") or f"HTTP {response.status}"
    error = api_error(
        response.status,
        found.get("Code", ""),
        f"uploading {name} to temporary storage failed: {message}",
        request_id,
    )
    error.headers = response.headers
    return error
