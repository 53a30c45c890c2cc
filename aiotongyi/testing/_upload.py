"""The emulator's temporary storage: DashScope's upload policy endpoint and an OSS form upload.

``GET /api/v1/uploads?action=getPolicy&model=M`` hands out a policy whose
``upload_host`` is this same server (``/oss``); a multipart ``POST /oss`` is
checked the way OSS checks it (policy, signature, key prefix, expiry,
overwrite, size) and the file is counted and hashed as it streams in, never
kept.  A chat request naming ``oss://`` without ``X-DashScope-OssResourceResolve``
is refused, as by the service.
"""

from __future__ import annotations

import collections
import hashlib
import json
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from aiohttp import BodyPartReader, web

__all__ = ["OSS_PATH", "POLICY_PATH", "RecordedUpload", "UploadFault", "UploadStorage"]

POLICY_PATH = "/api/v1/uploads"
OSS_PATH = "/oss"
_READ = 1 << 16


@dataclass(frozen=True)
class RecordedUpload:
    """One file the emulated OSS stored (its bytes are counted and hashed, not kept).

    :param key: the object key; the request refers to it as ``oss://KEY``.
    :param model: the model the policy was issued for.
    :param fields: the form fields before the file, in order.
    :param filename: the file part's file name.
    :param size: the file's size in bytes.
    :param sha256: the hex SHA-256 of the file.
    :param headers: the POST's headers, with lower-case names.
    :param part_headers: each form part's headers (lower-case names), in order.
    """

    key: str
    model: str
    fields: tuple[tuple[str, str], ...]
    filename: str | None
    size: int
    sha256: str
    headers: dict[str, str]
    part_headers: tuple[dict[str, str], ...] = ()

    @property
    def url(self) -> str:
        """``oss://KEY``."""
        return f"oss://{self.key}"


@dataclass(frozen=True)
class UploadFault:
    """A scripted failure of the next policy request or OSS upload.

    :param stage: ``"policy"`` (the getPolicy request) or ``"oss"`` (the form POST).
    :param status: the HTTP status of the error reply.
    :param code: the error code (DashScope JSON for the policy, OSS XML for OSS).
    :param message: the error message.
    :param disconnect: drop the connection instead (for OSS, after reading part of the file).
    """

    stage: Literal["policy", "oss"]
    status: int = 500
    code: str = "InternalError"
    message: str = "We encountered an internal error. Please try again."
    disconnect: bool = False


@dataclass
class _Issued:
    model: str
    upload_dir: str
    signature: str
    expires: float


class UploadStorage:
    """What the emulator's temporary storage holds and how it behaves.

    :param expire_in_seconds: lifetime of each policy handed out.
    :param max_file_size_mb: the policy's size limit (``EntityTooLarge`` above it).
    """

    def __init__(self, *, expire_in_seconds: int = 300, max_file_size_mb: int = 1024) -> None:
        self.expire_in_seconds = expire_in_seconds
        self.max_file_size_mb = max_file_size_mb
        self._lock = threading.Lock()
        self._policies: dict[str, _Issued] = {}
        self._stored: collections.OrderedDict[str, RecordedUpload] = collections.OrderedDict()
        self._faults: collections.deque[UploadFault] = collections.deque()
        self._policy_requests = 0

    @property
    def uploads(self) -> list[RecordedUpload]:
        """The files stored since start or reset, in arrival order (a copy)."""
        with self._lock:
            return list(self._stored.values())

    @property
    def policy_requests(self) -> int:
        """How many policies were handed out (faults included) since start or reset."""
        with self._lock:
            return self._policy_requests

    def fail(self, *faults: UploadFault) -> None:
        """Queue failures; each policy request or upload takes the oldest of its stage."""
        with self._lock:
            self._faults.extend(faults)

    def reset(self) -> None:
        """Forget policies, stored files and queued faults."""
        with self._lock:
            self._policies.clear()
            self._stored.clear()
            self._faults.clear()
            self._policy_requests = 0

    # -- server side (the emulator's loop) ------------------------------------

    def _fault(self, stage: str) -> UploadFault | None:
        with self._lock:
            for fault in self._faults:
                if fault.stage == stage:
                    self._faults.remove(fault)
                    return fault
        return None

    async def handle_policy(self, request: web.BaseRequest, origin: str) -> web.StreamResponse:
        with self._lock:
            self._policy_requests += 1
        if request.method != "GET":
            return _json_error(405, "MethodNotAllowed", "Method not allowed.")
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return _json_error(401, "InvalidApiKey", "Invalid API-key provided.")
        model = request.query.get("model", "")
        if request.query.get("action") != "getPolicy" or not model:
            return _json_error(400, "InvalidParameter", "action=getPolicy and model are required")
        fault = self._fault("policy")
        if fault is not None:
            if fault.disconnect:
                return _drop(request)
            return _json_error(fault.status, fault.code, fault.message)
        policy = secrets.token_urlsafe(24)
        issued = _Issued(
            model=model,
            upload_dir=f"dashscope-instant/{secrets.token_hex(16)}/{time.strftime('%Y-%m-%d')}",
            signature=secrets.token_urlsafe(12),
            expires=time.monotonic() + self.expire_in_seconds,
        )
        with self._lock:
            self._policies[policy] = issued
        data = {
            "policy": policy,
            "signature": issued.signature,
            "upload_dir": issued.upload_dir,
            "upload_host": origin + OSS_PATH,
            "expire_in_seconds": self.expire_in_seconds,
            "max_file_size_mb": self.max_file_size_mb,
            "capacity_limit_mb": 999999999,
            "oss_access_key_id": "LTAI-emulator",
            "x_oss_object_acl": "private",
            "x_oss_forbid_overwrite": "true",
        }
        request_id = str(uuid.uuid4())
        return web.Response(
            body=json.dumps({"request_id": request_id, "data": data}).encode(),
            headers={"Content-Type": "application/json", "X-Request-Id": request_id},
        )

    async def handle_oss(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method != "POST":
            return _oss_error(405, "MethodNotAllowed", "The specified method is not allowed.")
        if not request.content_type.startswith("multipart/form-data"):
            return _oss_error(400, "InvalidArgument", "Only multipart/form-data is accepted.")
        fault = self._fault("oss")
        reader = await request.multipart()
        fields: list[tuple[str, str]] = []
        part_headers: list[dict[str, str]] = []
        filename: str | None = None
        size, digest = 0, hashlib.sha256()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                return _oss_error(400, "InvalidArgument", "Nested multipart is not accepted.")
            part_headers.append({k.lower(): v for k, v in part.headers.items()})
            if part.name != "file":
                fields.append((part.name or "", await part.text()))
                continue
            filename = part.filename
            # Count and hash as it arrives: a large upload never sits in memory.
            while chunk := await part.read_chunk(_READ):
                size += len(chunk)
                digest.update(chunk)
                if fault is not None and fault.disconnect:
                    return _drop(request)
            break  # OSS ignores whatever follows the file
        if fault is not None:
            return _oss_error(fault.status, fault.code, fault.message)
        form = dict(fields)
        problem = self._check_form(form, filename, size)
        if problem is not None:
            return _oss_error(*problem)
        key = form["key"]
        issued = self._policies[form["policy"]]
        headers = {name.lower(): value for name, value in request.headers.items()}
        upload = RecordedUpload(
            key,
            issued.model,
            tuple(fields),
            filename,
            size,
            digest.hexdigest(),
            headers,
            tuple(part_headers),
        )
        with self._lock:
            self._stored[key] = upload
        status = 200 if form.get("success_action_status") == "200" else 204
        return web.Response(status=status, headers={"x-oss-request-id": _oss_request_id()})

    def _check_form(
        self, form: Mapping[str, str], filename: str | None, size: int
    ) -> tuple[int, str, str] | None:
        """OSS's answer to a form that breaks the rules, as (status, code, message)."""
        if filename is None:
            return 400, "InvalidArgument", "The body of your POST request is not well-formed."
        with self._lock:
            issued = self._policies.get(form.get("policy", ""))
            exists = form.get("key", "") in self._stored
        if issued is None or form.get("OSSAccessKeyId") != "LTAI-emulator":
            return 403, "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist."
        if form.get("Signature") != issued.signature:
            return 403, "SignatureDoesNotMatch", "The request signature does not match."
        if time.monotonic() >= issued.expires:
            return 403, "AccessDenied", "Invalid according to Policy: Policy expired."
        key = form.get("key", "")
        if not key.startswith(issued.upload_dir + "/") or key == issued.upload_dir + "/":
            return 403, "AccessDenied", "Invalid according to Policy: Policy Condition failed."
        if size > self.max_file_size_mb * 1024 * 1024:
            return 400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size."
        if exists and form.get("x-oss-forbid-overwrite") == "true":
            return 409, "FileAlreadyExists", "The object you specified already exists."
        return None


def oss_header_problem(payload: object, headers: Mapping[str, str]) -> tuple[str, str] | None:
    """The 400 for ``oss://`` media sent without the resolve header, as (code, message)."""
    if headers.get("x-dashscope-ossresourceresolve", "").lower() == "enable":
        return None
    if _names_oss(payload):
        return (
            "InvalidParameter",
            "The provided URL does not appear to be valid. Ensure it is correctly formatted.",
        )
    return None


def _names_oss(value: object) -> bool:
    if isinstance(value, str):
        return value.startswith("oss://")
    if isinstance(value, dict):
        return any(_names_oss(v) for v in value.values())
    if isinstance(value, list):
        return any(_names_oss(v) for v in value)
    return False


def _drop(request: web.BaseRequest) -> web.StreamResponse:
    if request.transport is not None:
        request.transport.abort()
    return web.Response()


def _json_error(status: int, code: str, message: str) -> web.Response:
    request_id = str(uuid.uuid4())
    body = {"code": code, "message": message, "request_id": request_id}
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        headers={"Content-Type": "application/json", "X-Request-Id": request_id},
    )


def _oss_request_id() -> str:
    return secrets.token_hex(12).upper()


def _oss_error(status: int, code: str, message: str) -> web.Response:
    request_id = _oss_request_id()
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n'
        f"  <Code>{code}</Code>\n  <Message>{message}</Message>\n"
        f"  <RequestId>{request_id}</RequestId>\n"
        "  <HostId>emulator.oss.local</HostId>\n</Error>\n"
    )
    return web.Response(
        status=status,
        body=body.encode(),
        headers={"Content-Type": "application/xml", "x-oss-request-id": request_id},
    )
