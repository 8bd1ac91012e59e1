"""Local stand-ins for the market data providers (this machine cannot reach them), speaking their protocols.

- :class:`PolygonStandIn`: Polygon.io's WebSocket stocks protocol (status ``connected``, ``auth`` ->
  ``auth_success`` / ``auth_failed`` then the socket dropped, ``subscribe`` -> one ``success`` per topic),
  replaying a recorded session (``tests/fixtures/polygon/*.json``) connection by connection, and its REST
  endpoints the provider asks (``/v1/marketstatus/now``, ``/v3/reference/tickers/{ticker}``).
- :class:`YahooStreamer`: Yahoo's streamer as yfinance's ``WebSocket`` reads it: JSON frames whose
  ``message`` is a base64 ``PricingData`` protobuf (built with yfinance's own generated class).
- :class:`YahooChartServer`: the chart endpoint yfinance polls (``/v8/finance/chart/{symbol}``), with
  :class:`LocalYahooSession`, a requests session that sends Yahoo's hosts to it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from websockets.asyncio.server import ServerConnection, serve

FIXTURES = Path(__file__).parent / "fixtures"


class _WebSocketServer:
    """A websockets server on 127.0.0.1 (a free port) running on its own event loop thread."""

    def __init__(self) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def handle(self, connection: ServerConnection) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with serve(self.handle, "127.0.0.1", 0) as server:
                self.port = next(iter(server.sockets)).getsockname()[1]
                self._ready.set()
                await self._stop.wait()

        asyncio.run(main())

    def __enter__(self) -> _WebSocketServer:
        self._thread.start()
        assert self._ready.wait(10), "the stand-in did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


class _JsonHandler(BaseHTTPRequestHandler):
    routes: Callable[[str], tuple[int, Any]]

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        status, body = self.routes(self.path)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not isinstance(body, bytes) else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _HttpServer:
    def __init__(self, routes: Callable[[str], tuple[int, Any]]) -> None:
        handler = type("Handler", (_JsonHandler,), {"routes": staticmethod(routes)})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class PolygonStandIn(_WebSocketServer):
    """Polygon's stocks WebSocket and REST, replaying ``session`` (a fixture's JSON) one connection each."""

    def __init__(self, session: dict[str, Any], market: str = "open") -> None:
        super().__init__()
        self.session = session
        self.market = market
        self.connections = 0
        self.auth_failures = 0
        self.subscriptions: list[str] = []
        self.sent_all = threading.Event()  # every connection of the session was served
        self.rest_calls: list[str] = []
        self.rest = _HttpServer(self._rest)

    @classmethod
    def from_fixture(cls, name: str, **kwargs: Any) -> PolygonStandIn:
        return cls(json.loads((FIXTURES / "polygon" / name).read_text()), **kwargs)

    def _rest(self, path: str) -> tuple[int, Any]:
        self.rest_calls.append(path)
        route = urlsplit(path).path
        if route == "/v1/marketstatus/now":
            return 200, {"market": self.market, "serverTime": time.strftime("%Y-%m-%dT%H:%M:%S-05:00")}
        if route.startswith("/v3/reference/tickers/"):
            ticker = route.rsplit("/", 1)[1]
            if ticker in self.session["tickers"]:
                return 200, {
                    "status": "OK",
                    "results": {"ticker": ticker, "market": "stocks", "active": True},
                }
            return 404, {"status": "NOT_FOUND", "message": "Ticker not found."}
        return 404, {"status": "NOT_FOUND"}

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.rest.close()

    async def handle(self, connection: ServerConnection) -> None:
        index = self.connections
        self.connections += 1
        plans = self.session["connections"]
        plan = plans[min(index, len(plans) - 1)] if index < len(plans) else {"frames": [], "end": "hold"}
        await connection.send(
            json.dumps([{"ev": "status", "status": "connected", "message": "Connected Successfully"}])
        )
        auth = json.loads(await connection.recv())
        if auth.get("action") != "auth" or auth.get("params") != self.session["api_key"]:
            self.auth_failures += 1
            await connection.send(
                json.dumps([{"ev": "status", "status": "auth_failed", "message": "authentication failed"}])
            )
            await asyncio.sleep(0.2)
            connection.transport.abort()  # Polygon drops the socket after a failed authentication
            return
        await connection.send(
            json.dumps([{"ev": "status", "status": "auth_success", "message": "authenticated"}])
        )
        subscribe = json.loads(await connection.recv())
        topics = str(subscribe.get("params", "")).split(",")
        self.subscriptions.append(subscribe.get("params", ""))
        for topic in topics:
            await connection.send(
                json.dumps([{"ev": "status", "status": "success", "message": f"subscribed to: {topic}"}])
            )
        for frame in plan["frames"]:
            await connection.send(json.dumps(frame))
            await asyncio.sleep(0.01)
        if index >= len(plans) - 1:
            self.sent_all.set()
        if plan["end"] == "drop":
            await asyncio.sleep(0.5)
            connection.transport.abort()  # cut mid-stream: no close frame
            return
        await connection.wait_closed()


def pricing_frame(**fields: Any) -> str:
    """One streamer frame as Yahoo sends it: ``{"type":"pricing","message": base64(PricingData)}``."""
    from yfinance.pricing_pb2 import PricingData

    message = base64.b64encode(PricingData(**fields).SerializeToString()).decode()
    return json.dumps({"type": "pricing", "message": message})


class YahooStreamer(_WebSocketServer):
    """Yahoo's streamer: after a ``{"subscribe": [...]}``, sends each connection's frames, then closes it."""

    def __init__(self, connections: list[list[str]]) -> None:
        super().__init__()
        self.plans = connections
        self.connections = 0
        self.subscribed: list[list[str]] = []
        self.sent_all = threading.Event()

    async def handle(self, connection: ServerConnection) -> None:
        index = self.connections
        self.connections += 1
        self.subscribed.append(json.loads(await connection.recv()).get("subscribe", []))
        if index >= len(self.plans):
            await connection.wait_closed()
            return
        for frame in self.plans[index]:
            await connection.send(frame)
            await asyncio.sleep(0.01)
        if index == len(self.plans) - 1:
            self.sent_all.set()
            await connection.wait_closed()
            return
        await asyncio.sleep(0.3)
        await connection.close()  # the streamer ends the connection: the provider reconnects


class YahooChartServer:
    """Yahoo's chart endpoint for polling: ``charts[symbol]`` is the ``meta`` returned (404 when absent)."""

    def __init__(self, charts: dict[str, dict[str, Any]]) -> None:
        self.charts = charts
        self.failing: dict[str, int] = {}  # symbol -> an HTTP status its chart answers (503: Yahoo down)
        self.requests: list[str] = []
        self.http = _HttpServer(self._route)
        self.url = self.http.url

    def _route(self, path: str) -> tuple[int, Any]:
        self.requests.append(path)
        route = urlsplit(path).path
        if route == "/v1/test/getcrumb":
            return 200, b"localcrumb"
        if route.startswith("/v8/finance/chart/"):
            symbol = route.rsplit("/", 1)[1]
            if symbol in self.failing:
                error = {"code": "Internal Server Error", "description": "Service unavailable, try later"}
                return self.failing[symbol], {"chart": {"result": None, "error": error}}
            if symbol not in self.charts:
                error = {"code": "Not Found", "description": "No data found, symbol may be delisted"}
                return 404, {"chart": {"result": None, "error": error}}
            meta = self.charts[symbol]
            stamp = int(meta["regularMarketTime"])
            result = {
                "meta": meta,
                "timestamp": [stamp - 60, stamp],
                "indicators": {
                    "quote": [
                        {
                            "open": [meta["regularMarketPrice"]] * 2,
                            "high": [meta["regularMarketPrice"]] * 2,
                            "low": [meta["regularMarketPrice"]] * 2,
                            "close": [meta["regularMarketPrice"]] * 2,
                            "volume": [100, 200],
                        }
                    ]
                },
            }
            return 200, {"chart": {"result": [result], "error": None}}
        if route.startswith("/v10/finance/quoteSummary/"):  # asked about a symbol with no chart
            symbol = route.rsplit("/", 1)[1]
            error = {"code": "Not Found", "description": f"Quote not found for symbol: {symbol}"}
            return 404, {"quoteSummary": {"result": None, "error": error}}
        return 200, b"ok"  # the cookie probe and consent pages

    def close(self) -> None:
        self.http.close()


class LocalYahooSession(requests.Session):
    """A requests session that sends Yahoo's hosts to a local server (and refuses anything else)."""

    HOSTS = (
        "https://query1.finance.yahoo.com",
        "https://query2.finance.yahoo.com",
        "https://fc.yahoo.com",
        "https://finance.yahoo.com",
        "https://guce.yahoo.com",
    )

    def __init__(self, local_url: str) -> None:
        super().__init__()
        self.local_url = local_url

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        text = url.decode() if isinstance(url, bytes) else url
        for host in self.HOSTS:
            if text.startswith(host):
                return super().request(method, self.local_url + text[len(host) :], *args, **kwargs)
        raise AssertionError(f"an unexpected request to {text}")
