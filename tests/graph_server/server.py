"""A Graph-compatible HTTP test server (stdlib, threaded) over the in-memory mailbox model.

Serves the subset of Microsoft Graph v1.0 that mail ingestion uses, shaped like the real service
(OData collections, `@odata.nextLink` paging with `$skip`, `$filter`/`$top`/`$select`/`$orderby`,
Graph error bodies, ids that need URL-encoding, `hasAttachments` ignoring inline attachments, the
"InefficientFilter" rule for `$orderby` with `$filter`, new ids after a move), plus fault
injection and a request log for assertions.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from tests.graph_server.model import Attachment, Folder, GraphModel, Message, User, file_attachment, item_attachment

API_PREFIX = "/v1.0"
DEFAULT_TOP = 10
MAX_TOP = 1000
STREAM_CHUNK = 64 * 1024
TEST_TOKEN = "test-token"  # the bearer token the server expects unless told otherwise


#: Graph's limits: a request body (sendMail) of 4 MB, an upload session of 150 MB, 4 MB per PUT.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_SESSION_BYTES = 150 * 1024 * 1024
MAX_CHUNK_BYTES = 4 * 1024 * 1024
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


@dataclass
class UploadSession:
    """An attachment upload session: the bytes so far, checked range by range as Graph does."""

    id: str
    token: str
    user: User
    message_id: str
    name: str
    content_type: str
    size: int
    received: bytearray = field(default_factory=bytearray)
    puts: list[str] = field(default_factory=list)  # every Content-Range accepted
    done: bool = False


@dataclass
class SentMail:
    """A message as it left the test tenant."""

    mailbox: str
    message: Message
    via: str  # sendMail | draft


class GraphHTTPError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


@dataclass
class Fault:
    """Fail matching requests: the `nth` match (1-based) and the `times - 1` after it.

    `pattern` is a regex searched in "METHOD /path" (path URL-decoded, without the query).
    `status` 0 with `truncate_after` set sends a 200 with the full Content-Length, then only
    that many body bytes, then closes the connection (a stream that dies midway).
    """

    pattern: str
    status: int = 503
    nth: int = 1
    times: int = 1
    retry_after: str | None = None
    truncate_after: int | None = None
    code: str = ""
    seen: int = 0
    fired: int = 0

    def take(self, line: str) -> bool:
        if not re.search(self.pattern, line):
            return False
        self.seen += 1
        if self.seen >= self.nth and self.fired < self.times:
            self.fired += 1
            return True
        return False


@dataclass
class RequestRecord:
    """One request as the server saw it. `started`/`finished` are time.monotonic() seconds."""

    method: str
    path: str
    query: dict[str, str]
    started: float
    finished: float = 0.0
    status: int = 0
    bytes_sent: int = 0
    authorized: bool = False
    retry_attempt: str = ""
    fault: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def line(self) -> str:
        return f"{self.method} {self.path}"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_dt(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# --- OData $filter (the subset Graph accepts for messages and folders) ---------------------------

_CLAUSE = re.compile(r"^\s*([A-Za-z]+(?:/[A-Za-z]+)*)\s+(eq|ne|ge|gt|le|lt)\s+(.+?)\s*$")
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "ge": lambda a, b: a >= b,
    "gt": lambda a, b: a > b, "le": lambda a, b: a <= b, "lt": lambda a, b: a < b,
}


def _literal(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    if text.startswith("'") and text.endswith("'") and len(text) >= 2:
        return text[1:-1].replace("''", "'")
    if re.match(r"^\d{4}-\d{2}-\d{2}T", text):
        return _parse_dt(text)
    try:
        return int(text)
    except ValueError:
        raise GraphHTTPError(400, "BadRequest", f"Invalid filter literal: {text}") from None


def _split_and(expr: str) -> list[str]:
    """Split on ` and ` outside quotes."""
    parts, buf, quoted, i = [], [], False, 0
    while i < len(expr):
        ch = expr[i]
        if ch == "'":
            quoted = not quoted
        if not quoted and expr[i:i + 5].lower() == " and ":
            parts.append("".join(buf))
            buf = []
            i += 5
            continue
        buf.append(ch)
        i += 1
    parts.append("".join(buf))
    return parts


def parse_filter(expr: str, props: dict[str, Callable[[Any], Any]]) -> tuple[list[str], Callable[[Any], bool]]:
    """`$filter` → (properties in order, predicate). Unsupported syntax is a 400, as in Graph."""
    clauses = []
    names = []
    for part in _split_and(expr):
        if re.search(r"\bor\b|\(|\bnot\b", part):
            raise GraphHTTPError(400, "ErrorInvalidUrlQueryFilter", f"Unsupported filter expression: {part}")
        m = _CLAUSE.match(part)
        if not m:
            raise GraphHTTPError(400, "BadRequest", f"Invalid filter clause: {part}")
        prop, op, raw = m.group(1), m.group(2), m.group(3)
        key = prop.lower()
        if key not in props:
            raise GraphHTTPError(400, "ErrorInvalidProperty", f"Could not find a property named '{prop}'.")
        clauses.append((props[key], _OPS[op], _literal(raw)))
        names.append(key)

    def predicate(obj: Any) -> bool:
        for getter, fn, value in clauses:
            actual = getter(obj)
            if isinstance(actual, str) and isinstance(value, str):
                actual, value = actual.lower(), value.lower()
            try:
                if not fn(actual, value):
                    return False
            except TypeError:
                return False
        return True

    return names, predicate


_MESSAGE_PROPS: dict[str, Callable[[Message], Any]] = {
    "isread": lambda m: m.is_read,
    "hasattachments": lambda m: m.has_attachments,
    "receiveddatetime": lambda m: m.received,
    "subject": lambda m: m.subject,
    "from/emailaddress/address": lambda m: m.sender.lower(),
    "internetmessageid": lambda m: m.internet_message_id,
}
_FOLDER_PROPS: dict[str, Callable[[Folder], Any]] = {"displayname": lambda f: f.display_name}


# --- JSON shapes ---------------------------------------------------------------------------------

def message_json(user: User, m: Message) -> dict[str, Any]:
    address = {"emailAddress": {"name": m.sender_name, "address": m.sender}}
    return {
        "@odata.etag": f'W/"CQAAABYAAA{m.change_key:04d}"',
        "id": m.id,
        "createdDateTime": _iso(m.received),
        "lastModifiedDateTime": _iso(m.received),
        "changeKey": f"CQAAABYAAA{m.change_key:04d}",
        "receivedDateTime": _iso(m.received),
        "sentDateTime": _iso(m.received),
        "hasAttachments": m.has_attachments,
        "internetMessageId": m.internet_message_id,
        "subject": m.subject,
        "bodyPreview": m.body[:255],
        "importance": "normal",
        "parentFolderId": m.folder_id,
        "conversationId": "AAQkAD" + m.internet_message_id.encode().hex()[:24],
        "isDeliveryReceiptRequested": m.receipt_requested,
        "isReadReceiptRequested": False,
        "isRead": m.is_read,
        "isDraft": m.is_draft,
        "webLink": f"https://outlook.office365.com/owa/?ItemID={quote(m.id)}",
        "body": {"contentType": m.body_type, "content": m.body},
        "sender": address,
        "from": address,
        "toRecipients": [{"emailAddress": {"name": a, "address": a}} for a in (m.to or [user.address])],
        "ccRecipients": [{"emailAddress": {"name": a, "address": a}} for a in m.cc],
        "bccRecipients": [{"emailAddress": {"name": a, "address": a}} for a in m.bcc],
        "replyTo": [],
        "flag": {"flagStatus": "notFlagged"},
    }


def mime_of(user: User, m: Message) -> bytes:
    """The MIME source of a message composed here (sent or drafted): headers, the body, the attachments."""
    from email.message import EmailMessage

    out = EmailMessage()
    out["From"] = m.sender
    if m.to:
        out["To"] = ", ".join(m.to)
    if m.cc:
        out["Cc"] = ", ".join(m.cc)
    out["Subject"] = m.subject
    out["Message-ID"] = m.internet_message_id
    out.set_content(m.body, subtype="html" if m.body_type == "html" else "plain")
    for a in m.attachments:
        maintype, _, subtype = a.content_type.partition("/")
        out.add_attachment(b"".join(a.chunks()), maintype=maintype or "application",
                           subtype=subtype or "octet-stream", filename=a.name)
    return out.as_bytes()


def attachment_json(a: Attachment, *, with_content: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "@odata.type": a.odata_type,
        "id": a.id,
        "lastModifiedDateTime": _iso(a.last_modified),
        "name": a.name,
        "contentType": a.content_type,
        "size": a.size,
        "isInline": a.is_inline,
    }
    if a.kind == "file":
        out["contentId"] = a.content_id
        out["contentLocation"] = None
        if with_content:  # Graph includes the whole file, base64, unless $select leaves it out
            out["contentBytes"] = base64.b64encode(b"".join(a.chunks())).decode()
    return out


def folder_json(user: User, f: Folder) -> dict[str, Any]:
    return {
        "id": f.id,
        "displayName": f.display_name,
        "parentFolderId": f.parent_id,
        "childFolderCount": len(user.children(f.id)),
        "unreadItemCount": sum(1 for m in user.messages.values() if m.folder_id == f.id and not m.is_read),
        "totalItemCount": sum(1 for m in user.messages.values() if m.folder_id == f.id),
        "isHidden": False,
    }


def _select(obj: dict[str, Any], select: str | None, keep: tuple[str, ...]) -> dict[str, Any]:
    if not select:
        return obj
    wanted = {s.strip().lower() for s in select.split(",") if s.strip()}
    return {k: v for k, v in obj.items() if k in keep or k.lower() in wanted}


# --- the server ------------------------------------------------------------------------------------

class GraphTestServer:
    """Start with `with GraphTestServer() as server:`; `server.base_url` ends in /v1.0.

    `token`: when set, Graph routes require `Authorization: Bearer <token>` or a token issued by an
    EntraTestAuthority for this server (`app_tokens`); 401 otherwise.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, token: str | None = TEST_TOKEN) -> None:
        self.model = GraphModel()
        self.token = token
        self.app_tokens: set[str] = set()  # tokens issued by an EntraTestAuthority (tests/graph_server/authority.py)
        self.faults: list[Fault] = []
        self.requests: list[RequestRecord] = []
        self.sessions: dict[str, UploadSession] = {}
        self.sent: list[SentMail] = []  # every message sent (sendMail or a draft's send), in order
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"graph": self})
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + API_PREFIX

    def start(self) -> GraphTestServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="graph-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> GraphTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- test helpers --------------------------------------------------------------------------

    def add_user(self, address: str) -> User:
        return self.model.add_user(address)

    def fail(self, pattern: str, status: int = 503, *, nth: int = 1, times: int = 1, retry_after: str | None = None,
             truncate_after: int | None = None, code: str = "") -> Fault:
        fault = Fault(pattern, status, nth, times, retry_after, truncate_after, code)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def log(self, pattern: str = "") -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if not pattern or re.search(pattern, r.line)]

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def _fault_for(self, line: str) -> Fault | None:
        # Every fault counts every request it matches, so `nth` means the nth request to the route.
        with self._lock:
            fired = [fault for fault in self.faults if fault.take(line)]
        return fired[0] if fired else None

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def _sent(self, user: User, msg: Message, via: str) -> None:
        with self._lock:
            self.sent.append(SentMail(user.address, msg, via))

    def sent_by(self, internet_message_id: str) -> list[SentMail]:
        with self._lock:
            return [s for s in self.sent if s.message.internet_message_id == internet_message_id]


class _Handler(BaseHTTPRequestHandler):
    graph: GraphTestServer
    protocol_version = "HTTP/1.1"
    server_version = "GraphTestServer/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # --- plumbing --------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        record = RequestRecord(method=method, path=path, query=query, started=time.monotonic(),
                               retry_attempt=self.headers.get("Retry-Attempt", ""),
                               headers={k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"})
        self._record = record
        # Logged as soon as it arrives (status and finished are filled in as the answer goes out): a client that
        # has its answer always finds its request in the log, however late this thread runs on afterwards.
        self.graph._record(record)
        try:
            if path.startswith("/_admin/"):
                self._admin(method, path, body)
                return
            if path.startswith("/upload/"):
                fault = self.graph._fault_for(record.line)
                if fault is not None:
                    record.fault = f"{fault.status}"
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                    raise GraphHTTPError(fault.status, "TooManyRequests" if fault.status == 429 else
                                         "ServiceNotAvailable", "Injected fault", headers)
                self._upload(method, path, query, body)
                return
            auth = self.headers.get("Authorization", "")
            bearer = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
            with self.graph._lock:
                issued = bearer in self.graph.app_tokens
            record.authorized = self.graph.token is None or bearer == self.graph.token or issued
            fault = self.graph._fault_for(record.line)
            if fault is not None and fault.truncate_after is None:
                record.fault = f"{fault.status}"
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                code = fault.code or {429: "TooManyRequests", 503: "ServiceNotAvailable",
                                      504: "GatewayTimeout"}.get(fault.status, "InternalServerError")
                raise GraphHTTPError(fault.status, code, "Injected fault", headers)
            if not record.authorized:
                raise GraphHTTPError(401, "InvalidAuthenticationToken", "Access token is empty or invalid.")
            if not path.startswith(API_PREFIX + "/"):
                raise GraphHTTPError(404, "UnknownError", "Unknown API version")
            self._route(method, path[len(API_PREFIX):], query, body, fault)
        except GraphHTTPError as exc:
            self._error(exc)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            if not record.finished:
                record.finished = time.monotonic()

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; odata.metadata=minimal; odata.streaming=true")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", "00000000-0000-0000-0000-000000000000")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self._record.status, self._record.bytes_sent = status, len(data)
        self.end_headers()
        self.wfile.write(data)
        self._record.finished = time.monotonic()

    def _error(self, exc: GraphHTTPError) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        self._send_json(exc.status, {"error": {"code": exc.code, "message": exc.message,
                                               "innerError": {"date": now, "request-id": "test",
                                                              "client-request-id": "test"}}}, exc.headers)

    def _json_body(self, body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body or b"{}")
        except json.JSONDecodeError:
            raise GraphHTTPError(400, "BadRequest", "Invalid JSON body") from None
        if not isinstance(data, dict):
            raise GraphHTTPError(400, "BadRequest", "Expected a JSON object")
        return data

    # --- Graph routes ----------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes, fault: Fault | None) -> None:
        parts = path.strip("/").split("/")
        if len(parts) < 2 or parts[0].lower() != "users":
            raise GraphHTTPError(400, "BadRequest", f"Resource not found for the segment '{parts[0]}'.")
        user = self.graph.model.user(parts[1])
        if user is None:
            raise GraphHTTPError(404, "ErrorInvalidUser", f"The requested user '{parts[1]}' is invalid.")
        rest = parts[2:]
        folder: Folder | None = None
        if rest and rest[0] == "mailFolders":
            if len(rest) == 1:
                if method != "GET":
                    raise GraphHTTPError(405, "MethodNotAllowed", "Method not allowed")
                root = user.folder("msgfolderroot")
                assert root is not None
                self._collection(query, user.children(root.id), lambda f: folder_json(user, f), _FOLDER_PROPS,
                                 keep=("id",))
                return
            folder = user.folder(rest[1])
            if folder is None:
                raise GraphHTTPError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            rest = rest[2:]
            if not rest:
                self._send_json(200, _select(folder_json(user, folder), query.get("$select"), ("id",)))
                return
            if rest == ["childFolders"]:
                self._collection(query, user.children(folder.id), lambda f: folder_json(user, f), _FOLDER_PROPS,
                                 keep=("id",))
                return
        if rest == ["sendMail"] and folder is None:
            if method != "POST":
                raise GraphHTTPError(405, "MethodNotAllowed", "Method not allowed")
            if len(body) > MAX_REQUEST_BYTES:
                raise GraphHTTPError(413, "RequestEntityTooLarge", "The request is larger than 4 MB.")
            data = {k.lower(): v for k, v in self._json_body(body).items()}
            spec = data.get("message")
            if not isinstance(spec, dict):
                raise GraphHTTPError(400, "ErrorInvalidParameter", "The message parameter is missing.")
            composed = self._compose(user, spec, folder="sentitems" if data.get("savetosentitems", True) else "outbox")
            self.graph._sent(user, composed, "sendMail")
            self._send_empty(202)
            return
        if not rest or rest[0] != "messages":
            raise GraphHTTPError(400, "BadRequest", f"Unsupported segment {'/'.join(rest)}")
        if len(rest) == 1:
            if method == "POST" and folder is None:
                draft = self._compose(user, self._json_body(body), folder="drafts", draft=True)
                self._send_json(201, message_json(user, draft))
                return
            if method != "GET":
                raise GraphHTTPError(405, "MethodNotAllowed", "Method not allowed")
            self._list_messages(user, folder, query)
            return
        with user._lock:
            msg = user.messages.get(rest[1])
        if msg is None or (folder is not None and msg.folder_id != folder.id):
            raise GraphHTTPError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        tail = rest[2:]
        if not tail:
            if method == "GET":
                self._send_json(200, _select(message_json(user, msg), query.get("$select"), ("id", "@odata.etag")))
            elif method == "DELETE":
                with user._lock:
                    user.messages.pop(msg.id, None)
                self._send_empty(204)
            elif method == "PATCH":
                data = self._json_body(body)
                with user._lock:
                    if "isRead" in data:
                        msg.is_read = bool(data["isRead"])
                    msg.change_key += 1
                self._send_json(200, message_json(user, msg))
            else:
                raise GraphHTTPError(405, "MethodNotAllowed", "Method not allowed")
            return
        if tail == ["$value"] and method == "GET":
            self._send_bytes(200, msg.mime if msg.mime is not None else mime_of(user, msg), "message/rfc822")
            return
        if tail == ["send"] and method == "POST":
            if not msg.is_draft:
                raise GraphHTTPError(400, "ErrorInvalidRequest", "Only a draft can be sent.")
            if not msg.to and not msg.cc and not msg.bcc:
                raise GraphHTTPError(400, "ErrorInvalidRecipients", "At least one recipient is not valid.")
            sent = user.folder("sentitems")
            assert sent is not None
            moved = user.move(msg.id, sent.id)
            moved.is_draft = False
            self.graph._sent(user, moved, "draft")
            self._send_empty(202)
            return
        if tail == ["attachments", "createUploadSession"] and method == "POST":
            self._create_session(user, msg, body)
            return
        if tail == ["move"] and method == "POST":
            # OData action parameters are case-insensitive: the SDK sends "DestinationId".
            params = {k.lower(): v for k, v in self._json_body(body).items()}
            dest_ref = str(params.get("destinationid") or "")
            dest = user.folder(dest_ref)
            if dest is None:
                raise GraphHTTPError(404, "ErrorItemNotFound", "The destination folder was not found.")
            moved = user.move(msg.id, dest.id)
            self._send_json(201, message_json(user, moved))
            return
        if tail[0] == "attachments" and method == "GET":
            if len(tail) == 1:
                self._collection(query, list(msg.attachments),
                                 lambda a: attachment_json(a, with_content=not query.get("$select")), None,
                                 keep=("@odata.type", "id"))
                return
            att = next((a for a in msg.attachments if a.id == tail[1]), None)
            if att is None:
                raise GraphHTTPError(404, "ErrorItemNotFound", "The attachment was not found.")
            if len(tail) == 2:
                self._send_json(200, _select(attachment_json(att, with_content=not query.get("$select")),
                                             query.get("$select"), ("@odata.type", "id")))
                return
            if tail[2:] == ["$value"]:
                self._stream(att, fault)
                return
        raise GraphHTTPError(400, "BadRequest", f"Unsupported request {method} {path}")

    # --- sending ---------------------------------------------------------------------------------

    def _compose(self, user: User, spec: dict[str, Any], *, folder: str, draft: bool = False) -> Message:
        """A message from a Graph message resource (sendMail's `message`, or a new draft)."""
        def addresses(key: str) -> list[str]:
            out = []
            for r in spec.get(key) or []:
                address = str(((r or {}).get("emailAddress") or {}).get("address") or "")
                if "@" not in address:
                    raise GraphHTTPError(400, "ErrorInvalidRecipients", "At least one recipient is not valid.")
                out.append(address)
            return out

        to, cc, bcc = addresses("toRecipients"), addresses("ccRecipients"), addresses("bccRecipients")
        if not draft and not (to or cc or bcc):
            raise GraphHTTPError(400, "ErrorInvalidRecipients", "At least one recipient is not valid.")
        imid = spec.get("internetMessageId")
        if imid is not None and not re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", str(imid)):
            raise GraphHTTPError(400, "ErrorInvalidInternetMessageHeader", "The internetMessageId is not valid.")
        attachments = []
        for a in spec.get("attachments") or []:
            if str(a.get("@odata.type", "")).lower() != "#microsoft.graph.fileattachment":
                raise GraphHTTPError(400, "ErrorInvalidAttachmentType", "Only file attachments are supported here.")
            attachments.append(file_attachment(str(a.get("name") or "attachment"),
                                               base64.b64decode(str(a.get("contentBytes") or "")),
                                               content_type=str(a.get("contentType") or "application/octet-stream")))
        body = spec.get("body") or {}
        msg = user.add_message(folder, subject=str(spec.get("subject") or ""), sender=user.address,
                               attachments=attachments, body=str(body.get("content") or ""),
                               internet_message_id=str(imid) if imid else None)
        msg.is_read = True
        msg.is_draft = draft
        msg.body_type = str(body.get("contentType") or "text").lower()
        msg.to, msg.cc, msg.bcc = to, cc, bcc
        msg.receipt_requested = bool(spec.get("isDeliveryReceiptRequested", False))
        return msg

    def _create_session(self, user: User, msg: Message, body: bytes) -> None:
        if not msg.is_draft:
            raise GraphHTTPError(400, "ErrorInvalidRequest", "Attachments can only be uploaded to a draft.")
        params = {k.lower(): v for k, v in self._json_body(body).items()}
        item = {k.lower(): v for k, v in (params.get("attachmentitem") or {}).items()}
        if str(item.get("attachmenttype", "")).lower() != "file" or not item.get("name"):
            raise GraphHTTPError(400, "ErrorInvalidParameter", "attachmentItem needs attachmentType file and a name.")
        size = item.get("size")
        if not isinstance(size, int) or size <= 0:
            raise GraphHTTPError(400, "ErrorInvalidParameter", "attachmentItem.size must be a positive number.")
        if size > MAX_SESSION_BYTES:
            raise GraphHTTPError(400, "ErrorAttachmentSizeLimitExceeded", "The attachment is over 150 MB.")
        session = UploadSession(id=uuid.uuid4().hex, token=uuid.uuid4().hex, user=user, message_id=msg.id,
                                name=str(item["name"]), content_type=str(item.get("contenttype") or
                                                                         "application/octet-stream"), size=size)
        self.graph.sessions[session.id] = session
        host = self.headers.get("Host") or f"127.0.0.1:{self.graph.port}"
        self._send_json(201, {
            "@odata.context": f"{self.graph.root_url}{API_PREFIX}/$metadata#microsoft.graph.uploadSession",
            "uploadUrl": f"http://{host}/upload/{session.id}?authtoken={session.token}",
            "expirationDateTime": _iso(datetime.now(UTC) + timedelta(hours=2)), "nextExpectedRanges": ["0-"]})

    def _upload(self, method: str, path: str, query: dict[str, str], body: bytes) -> None:
        """A PUT to an upload URL, checked as Graph checks it: the session's token (and no bearer token), a
        Content-Range `bytes a-b/total` with total = the session's size, `a` = the next expected byte, b - a + 1 =
        Content-Length, at most 4 MB per request. The last range commits the attachment (201 + Location)."""
        session = self.graph.sessions.get(path.split("/")[2] if path.count("/") >= 2 else "")
        if method == "DELETE" and session is not None:
            self.graph.sessions.pop(session.id, None)
            self._send_empty(204)
            return
        if method != "PUT":
            raise GraphHTTPError(405, "MethodNotAllowed", "Method not allowed")
        if session is None or query.get("authtoken") != session.token:
            raise GraphHTTPError(404, "ErrorItemNotFound", "The upload session was not found.")
        if self.headers.get("Authorization"):
            raise GraphHTTPError(401, "InvalidAuthenticationToken",
                                 "Do not send an Authorization header to an upload URL.")
        if session.done:
            raise GraphHTTPError(400, "ErrorInvalidRequest", "The upload session is complete.")
        m = _CONTENT_RANGE.match(self.headers.get("Content-Range", ""))
        if not m:
            raise GraphHTTPError(400, "InvalidContentRange", "The Content-Range header is missing or malformed.")
        first, last, total = (int(g) for g in m.groups())
        if total != session.size:
            raise GraphHTTPError(400, "InvalidContentRange", f"The total {total} differs from the session's "
                                                             f"size {session.size}.")
        if first != len(session.received):
            raise GraphHTTPError(416, "InvalidRange", f"Expected the range to start at {len(session.received)}.")
        if last < first or last >= total or last - first + 1 != len(body):
            raise GraphHTTPError(400, "InvalidContentRange", "The range does not match the body's length.")
        if len(body) > MAX_CHUNK_BYTES:
            raise GraphHTTPError(413, "RequestEntityTooLarge", "A chunk must be at most 4 MB.")
        session.received += body
        session.puts.append(f"{first}-{last}/{total}")
        if len(session.received) < session.size:
            self._send_json(200, {"expirationDateTime": _iso(datetime.now(UTC) + timedelta(hours=2)),
                                  "nextExpectedRanges": [f"{len(session.received)}-"]})
            return
        session.done = True
        user = session.user
        with user._lock:
            msg = user.messages.get(session.message_id)
            if msg is None:
                raise GraphHTTPError(404, "ErrorItemNotFound", "The draft was deleted.")
            att = file_attachment(session.name, bytes(session.received), content_type=session.content_type)
            msg.attachments.append(att)
        session.received = bytearray()  # the bytes now live on the attachment
        location = f"{self.graph.root_url}{API_PREFIX}/users/{user.id}/messages/{quote(msg.id)}/attachments/" \
                   f"{quote(att.id)}"
        self._send_empty(201, {"Location": location})

    def _send_empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self._record.status = status
        self.end_headers()
        self._record.finished = time.monotonic()

    def _send_bytes(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self._record.status, self._record.bytes_sent = status, len(data)
        self.end_headers()
        self.wfile.write(data)
        self._record.finished = time.monotonic()

    def _list_messages(self, user: User, folder: Folder | None, query: dict[str, str]) -> None:
        with user._lock:
            items = [m for m in user.messages.values() if folder is None or m.folder_id == folder.id]
        orderby = query.get("$orderby", "receivedDateTime desc").strip()
        m = re.match(r"^(\w+)(?:\s+(asc|desc))?$", orderby)
        if not m or m.group(1).lower() not in ("receiveddatetime", "subject"):
            raise GraphHTTPError(400, "BadRequest", f"Unsupported $orderby: {orderby}")
        names: list[str] = []
        if query.get("$filter"):
            names, predicate = parse_filter(query["$filter"], _MESSAGE_PROPS)
            if "$orderby" in query and names and names[0] != m.group(1).lower():
                # Graph: properties in $orderby must come first in $filter, in the same order.
                raise GraphHTTPError(400, "InefficientFilter",
                                     "The restriction or sort order is too complex for this operation.")
            items = [i for i in items if predicate(i)]
        key = _MESSAGE_PROPS[m.group(1).lower()]
        items.sort(key=lambda i: (key(i), i.id), reverse=(m.group(2) or "asc") == "desc")
        self._page(query, items, lambda i: message_json(user, i), keep=("id", "@odata.etag"))

    def _collection(self, query: dict[str, str], items: list[Any], render: Callable[[Any], dict[str, Any]],
                    props: dict[str, Callable[[Any], Any]] | None, *, keep: tuple[str, ...]) -> None:
        if query.get("$filter"):
            if props is None:
                raise GraphHTTPError(400, "BadRequest", "$filter is not supported here")
            _, predicate = parse_filter(query["$filter"], props)
            items = [i for i in items if predicate(i)]
        self._page(query, items, render, keep=keep)

    def _page(self, query: dict[str, str], items: list[Any], render: Callable[[Any], dict[str, Any]], *,
              keep: tuple[str, ...]) -> None:
        try:
            top = min(int(query.get("$top", DEFAULT_TOP)), MAX_TOP)
            skip = int(query.get("$skip", 0))
        except ValueError:
            raise GraphHTTPError(400, "BadRequest", "Invalid $top or $skip") from None
        page = items[skip:skip + top]
        payload: dict[str, Any] = {
            "@odata.context": f"{self.graph.root_url}{API_PREFIX}/$metadata#collection",
            "value": [_select(render(i), query.get("$select"), keep) for i in page],
        }
        if skip + top < len(items):
            params = {**query, "$top": str(top), "$skip": str(skip + top)}
            host = self.headers.get("Host") or f"127.0.0.1:{self.graph.port}"
            raw_path = urlsplit(self.path).path  # as the client encoded it
            payload["@odata.nextLink"] = f"http://{host}{raw_path}?{urlencode(params, quote_via=quote)}"
        self._send_json(200, payload)

    def _stream(self, att: Attachment, fault: Fault | None) -> None:
        """`$value`: the raw bytes, written in chunks (the server never holds a large file)."""
        limit = fault.truncate_after if fault is not None else None
        if fault is not None:
            self._record.fault = f"truncate@{limit}"
        self.send_response(200)
        self.send_header("Content-Type", att.content_type if att.kind == "file" else "message/rfc822")
        self.send_header("Content-Length", str(att.size))
        self.end_headers()
        self._record.status = 200
        sent = 0
        for block in att.chunks():
            for i in range(0, len(block), STREAM_CHUNK):
                piece = block[i:i + STREAM_CHUNK]
                if limit is not None and sent + len(piece) > limit:
                    piece = piece[:max(0, limit - sent)]
                    self.wfile.write(piece)
                    sent += len(piece)
                    self._record.bytes_sent = sent
                    self.wfile.flush()
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                self.wfile.write(piece)
                sent += len(piece)
        self._record.bytes_sent = sent

    # --- admin (for the standalone server and the benchmark) --------------------------------------

    def _admin(self, method: str, path: str, body: bytes) -> None:
        graph = self.graph
        parts = path.strip("/").split("/")[1:]
        data = self._json_body(body) if body else {}
        if parts == ["requests"] and method == "GET":
            self._send_json(200, [asdict(r) for r in graph.log()])
        elif parts == ["requests"] and method == "DELETE":
            graph.clear_log()
            self._send_json(200, {})
        elif parts == ["faults"] and method == "POST":
            fault = graph.fail(str(data["pattern"]), int(data.get("status", 503)), nth=int(data.get("nth", 1)),
                               times=int(data.get("times", 1)), retry_after=data.get("retryAfter"),
                               truncate_after=data.get("truncateAfter"))
            self._send_json(201, asdict(fault))
        elif parts == ["faults"] and method == "DELETE":
            graph.clear_faults()
            self._send_json(200, {})
        elif parts == ["users"] and method == "POST":
            user = graph.model.user(str(data["address"])) or graph.add_user(str(data["address"]))
            self._send_json(201, {"id": user.id, "address": user.address})
        elif len(parts) == 3 and parts[0] == "users" and parts[2] == "mime" and method == "POST":
            user = graph.model.user(parts[1]) or graph.add_user(parts[1])
            msg = user.add_mime(base64.b64decode(str(data["mimeBase64"])), str(data.get("folder", "Inbox")))
            self._send_json(201, {"id": msg.id, "internetMessageId": msg.internet_message_id})
        elif len(parts) == 3 and parts[0] == "users" and parts[2] == "sent" and method == "GET":
            self._send_json(200, [{"internetMessageId": s.message.internet_message_id, "via": s.via,
                                   "subject": s.message.subject, "to": s.message.to,
                                   "attachments": [{"name": a.name, "size": a.size, "sha256": a.sha256()}
                                                   for a in s.message.attachments]}
                                  for s in graph.sent if s.mailbox == parts[1].lower()])
        elif len(parts) == 3 and parts[0] == "users" and parts[2] == "messages" and method == "POST":
            user = graph.model.user(parts[1]) or graph.add_user(parts[1])
            msg = user.add_message(
                str(data.get("folder", "Inbox")), subject=str(data.get("subject", "")),
                sender=str(data.get("from", "partner@example.com")), is_read=bool(data.get("isRead", False)),
                attachments=[_admin_attachment(a) for a in data.get("attachments", [])],
            )
            self._send_json(201, {"id": msg.id, "internetMessageId": msg.internet_message_id,
                                  "attachments": [{"id": a.id, "name": a.name, "size": a.size}
                                                  for a in msg.attachments]})
        else:
            self._send_json(404, {"error": {"code": "NotFound", "message": f"no admin route {method} {path}"}})


def _admin_attachment(spec: dict[str, Any]) -> Attachment:
    name = str(spec["name"])
    if spec.get("kind") == "item":
        return item_attachment(name, base64.b64decode(spec.get("contentBase64", "")))
    if "contentBase64" in spec:
        return file_attachment(name, base64.b64decode(spec["contentBase64"]),
                               content_type=spec.get("contentType", "application/octet-stream"),
                               inline=bool(spec.get("isInline", False)))
    return file_attachment(name, size=int(spec["size"]), seed=int(spec.get("seed", 1)),
                           content_type=spec.get("contentType", "application/octet-stream"),
                           inline=bool(spec.get("isInline", False)))


def iter_log_lines(server: GraphTestServer) -> Iterator[str]:
    for r in server.log():
        yield f"{r.started:.3f} {r.status} {r.line} {r.fault}"
