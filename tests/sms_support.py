"""A local HTTP server that speaks the documented Twilio Messages API, for the SMS tests.

It accepts ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form-encoded ``To``,
``From`` or ``MessagingServiceSid``, ``Body``, ``StatusCallback``) with HTTP Basic auth, keeps
every message, and answers ``201`` with JSON ``{"sid", "status": "queued", ...}``; wrong
credentials get ``401`` with Twilio's error body. ``refuse`` maps a number to the error code
to refuse it with (``21211``, ``21610``...), ``fail_next`` answers the next requests with that
status. As the provider, it posts status callbacks and inbound messages to the product, signed
like Twilio signs them (``X-Twilio-Signature``: base64 HMAC-SHA1 of the URL followed by the
POST parameters sorted by name, each name and value concatenated).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import httpx

from widget_server.store.embedded import free_port

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "auth-token-0123456789abcdef"
FROM_NUMBER = "+15005550006"


def twilio_signature(token: str, url: str, params: dict[str, str]) -> str:
    """Written from Twilio's documentation, independently of the product's own check."""
    data = url + "".join(name + params[name] for name in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


@dataclass
class SentSms:
    sid: str
    to: str
    sender: str
    body: str
    status_callback: str


@dataclass
class FakeMessagesApi:
    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    refuse: dict[str, int] = field(default_factory=dict)
    fail_next: list[int] = field(default_factory=list)
    messages: list[SentSms] = field(default_factory=list)
    requests: int = 0
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The product's settings for this provider."""
        return {
            "SMS_API_URL": self.url,
            "SMS_ACCOUNT_SID": self.account_sid,
            "SMS_AUTH_TOKEN": self.auth_token,
            "SMS_FROM": FROM_NUMBER,
        }

    def to(self, number: str) -> list[SentSms]:
        with self._lock:
            return [m for m in self.messages if m.to == number]

    def __enter__(self) -> FakeMessagesApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, body: dict[str, object]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                with api._lock:
                    api.requests += 1
                    failure = api.fail_next.pop(0) if api.fail_next else 0
                if self.path != f"/2010-04-01/Accounts/{api.account_sid}/Messages.json":
                    return self._answer(404, {"code": 20404, "message": "not found"})
                expected = base64.b64encode(f"{api.account_sid}:{api.auth_token}".encode())
                if self.headers.get("authorization", "") != f"Basic {expected.decode()}":
                    return self._answer(401, {"code": 20003, "message": "Authenticate"})
                if failure:
                    return self._answer(failure, {"code": 20500, "message": "try later"})
                to = form.get("To", "")
                if to in api.refuse:
                    return self._answer(400, {"code": api.refuse[to], "message": "refused"})
                if (
                    not to
                    or not form.get("Body")
                    or not (form.get("From") or form.get("MessagingServiceSid"))
                ):
                    return self._answer(400, {"code": 21604, "message": "missing parameter"})
                sid = "SM" + secrets.token_hex(16)
                sent = SentSms(
                    sid, to, form.get("From", ""), form["Body"], form.get("StatusCallback", "")
                )
                with api._lock:
                    api.messages.append(sent)
                return self._answer(
                    201,
                    {"sid": sid, "status": "queued", "to": to, "body": form["Body"],
                     "account_sid": api.account_sid},
                )  # fmt: skip

        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- the provider calling the product --------------------------------------------------
    def signed_post(
        self, url: str, params: dict[str, str], *, token: str | None = None
    ) -> httpx.Response:
        signature = twilio_signature(token or self.auth_token, url, params)
        return httpx.post(url, data=params, headers={"x-twilio-signature": signature})

    def inbound(self, url: str, sender: str, body: str) -> httpx.Response:
        """A text from ``sender`` to our number, as Twilio posts it to the product."""
        params = {
            "MessageSid": "SM" + secrets.token_hex(16),
            "AccountSid": self.account_sid,
            "From": sender,
            "To": FROM_NUMBER,
            "Body": body,
            "NumMedia": "0",
        }
        return self.signed_post(url, params)

    def status(self, message: SentSms, status: str, error_code: str = "") -> httpx.Response:
        """A status callback for ``message`` to the URL it named."""
        params = {
            "MessageSid": message.sid,
            "AccountSid": self.account_sid,
            "MessageStatus": status,
            "To": message.to,
            "From": FROM_NUMBER,
        }
        if error_code:
            params["ErrorCode"] = error_code
        return self.signed_post(message.status_callback, params)
