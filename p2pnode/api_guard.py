"""What the API checks before any route sees a request: who asks, and how much.

- A body over the node's cap is answered 413, with a JSON error, before
  anything is acknowledged: by its Content-Length at once, or, when it comes in
  chunks, as soon as the chunks pass the cap.
- A streamed route (`ipfs add`: a whole file as the body) has a cap of its
  own: a Content-Length over it is answered 413 here; chunks go to the route
  as they come (never gathered here), and the route counts them.
- With a token set (`Node.API.Auth.Token`), every request must carry
  `Authorization: Bearer TOKEN`; others get 401. The token is compared in
  constant time.

Plain ASGI, so it wraps the app whole and no route can forget it.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from typing import Any

Scope = dict[str, Any]
ASGIApp = Any


class ApiGuard:
    def __init__(self, app: ASGIApp, *, max_body: int, token: str | None,
                 streamed: Mapping[str, tuple[int, str]] | None = None) -> None:
        self.app = app
        self.max_body = max_body
        self.streamed = dict(streamed or {})  # path -> (its cap, the setting that raises it)
        self._token = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self._token is not None and not hmac.compare_digest(headers.get(b"authorization", b""), self._token):
            await _refuse(scope, send, 401, "this node's API needs a token",
                          "pass --token TOKEN or set P2PNODE_API_TOKEN (the node's Node.API.Auth.Token)",
                          [(b"www-authenticate", b'Bearer realm="p2pnode"')])
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length")
        streamed = self.streamed.get(scope.get("path", ""))
        cap, setting = streamed or (self.max_body, "Node.API.MaxBodySize")
        if declared is not None:
            if not declared.isdigit() or int(declared) > cap:
                await self._too_large(scope, send, declared.decode(errors="replace"), cap, setting)
                return
            await self.app(scope, receive, send)
            return
        if streamed is not None:
            await self.app(scope, receive, send)  # a streamed route counts its chunks itself
            return
        # Chunked: read it here, up to the cap, before any route acknowledges it.
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await self._too_large(scope, send, f"over {self.max_body}", self.max_body, "Node.API.MaxBodySize")
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, send: Any, size: str, cap: int, setting: str) -> None:
        hint = ("put large data in an input source (ipfs, s3, url) rather than in the job; the node's operator can "
                "raise Node.API.MaxBodySize") if setting == "Node.API.MaxBodySize" else \
            f"the node's operator can raise {setting}"
        await _refuse(scope, send, 413, f"the request body ({size} bytes) is over this node's {cap}-byte limit", hint)


async def _refuse(scope: Scope, send: Any, status: int, error: str, hint: str,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": error[:120]})
        return
    body = json.dumps({"error": error, "hint": hint, "code": status}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
