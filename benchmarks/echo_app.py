"""Baseline for ``benchmarks/realtime.py``: a bare Starlette WebSocket app served by uvicorn with
the options ``widget-server serve`` uses, so that the difference to the visitor socket is the
product's own work (validation, the Lua call, bookkeeping), not the transport.

Every text frame is answered like the product answers an event: ``{"type":"ack","ids":[id]}``.
``POST /broadcast`` is the fixed yardstick of a live offer: one prepared offer payload sent to every
connected socket, nothing decided or claimed (``benchmarks/offers.py`` compares the product's live
offer with it).

Run: ``python benchmarks/echo_app.py --port 8765 [--ws auto|websockets|websockets-sansio|wsproto]``
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from widget_server.settings import Settings

# The uvicorn options of widget_server.cli._run_server (single worker). Keep them in step: the
# baseline is only meaningful when both servers run the same WebSocket stack.
UVICORN_OPTIONS: dict[str, Any] = {
    "ws": "auto",
    "ws_max_size": Settings().max_frame_bytes * 4,
    "ws_per_message_deflate": False,
    "log_config": None,
    "timeout_graceful_shutdown": 10,
    "server_header": False,
}

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


SOCKETS: set[WebSocket] = set()
OFFER = _encode({"type": "offer", "offer": {
    "id": "flash-sale.a", "campaign": "flash-sale", "variant": "a", "kind": "message",
    "headline": "Flash sale: 20% off everything for one hour",
    "body": "Starts now, ends at the top of the hour.",
    "cta": {"label": "Shop the sale", "url": "/demo/"},
    "theme": {"accent": "#7c3aed", "background": "#faf5ff", "text": "#1e1b4b", "radius": 14},
}}).decode()  # fmt: skip


async def broadcast(request: Request) -> Response:
    """Send the prepared offer to every connected socket, one after the other."""
    for ws in list(SOCKETS):
        try:
            await ws.send_text(OFFER)
        except Exception:  # a socket that went away
            SOCKETS.discard(ws)
    return PlainTextResponse(str(len(SOCKETS)))


async def echo(ws: WebSocket) -> None:
    await ws.accept()
    SOCKETS.add(ws)
    try:
        while True:
            text = await ws.receive_text()
            try:
                message = _decode(text)
                msg_id = message.get("id") if isinstance(message, dict) else None
            except msgspec.DecodeError:
                msg_id = None
            await ws.send_text(_encode({"type": "ack", "ids": [msg_id]}).decode())
    except WebSocketDisconnect:
        pass
    finally:
        SOCKETS.discard(ws)


async def ready(request: Request) -> Response:
    return PlainTextResponse("ready")


app = Starlette(
    routes=[
        Route("/readyz", ready),
        Route("/healthz", ready),
        Route("/broadcast", broadcast, methods=["POST"]),
        WebSocketRoute("/v1/ws", echo),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ws", default=UVICORN_OPTIONS["ws"], help="uvicorn WebSocket protocol")
    args = parser.parse_args()
    options = {**UVICORN_OPTIONS, "ws": args.ws}
    uvicorn.run(app, host=args.host, port=args.port, **options)


if __name__ == "__main__":
    main()
