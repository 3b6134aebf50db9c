"""The web view's ASGI application (Starlette): one page, a JSON API under `/api`, and a
server-sent event stream that tells the page when the counts change.

Reading is open to whoever reaches the server. The one action that changes anything
(replaying dead letters) is refused unless the caller is on this machine (127.0.0.1 or
::1) or, when a token is configured, shows it (`Authorization: Bearer TOKEN`); in both
cases it must come as JSON from this page's own origin, so that another web site open in
the same browser cannot make the browser send it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from saga_registry.engine.errors import EngineError
from saga_registry.registry.names import did_you_mean
from saga_registry.ui import pictures
from saga_registry.ui.data import Source

log = logging.getLogger("saga.ui")

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_STREAM_EVERY_S = 1.0
_SAGA_LIMIT_MAX = 1000


def make_app(
    source: Source,
    token: str | None = None,
    stream_every_s: float = _STREAM_EVERY_S,
    listen: str = "127.0.0.1",
) -> Starlette:
    """The application serving `source`'s sagas; `token`, if given, is what a replay
    must show (it may then come from anywhere). Listening on a loopback address (`listen`),
    it answers only requests addressed to a loopback name: a web page whose own host name
    was made to point at 127.0.0.1 (DNS rebinding) cannot read it either."""
    static = resources.files("saga_registry.ui") / "static"
    registry = source.registry
    latest = _Latest(source, stream_every_s)

    async def page(_: Request) -> Response:
        return FileResponse(str(static / "index.html"))

    async def overview(_: Request) -> Response:
        return JSONResponse(await latest.get())

    async def sagas(request: Request) -> Response:
        q = request.query_params
        try:
            limit = min(max(int(q.get("limit", "200")), 1), _SAGA_LIMIT_MAX)
        except ValueError:
            return _problem(400, f"limit {q.get('limit')!r} is not a number")
        state = q.get("state") or None
        known = {s.name for s in registry.state_machine.states} | {
            "in-flight",
            "stuck",
            "parked",
            "ended",
        }
        if state is not None and state not in known:
            return _problem(400, f"state {state!r} is neither a state of the registry nor a status")
        return JSONResponse(await source.sagas(state=state, search=q.get("q", ""), limit=limit))

    async def saga(request: Request) -> Response:
        doc = await source.saga(request.path_params["saga_id"])
        if doc is None:
            return _problem(404, f"no service has seen saga {request.path_params['saga_id']!r}")
        return JSONResponse(doc)

    async def saga_path(request: Request) -> Response:
        t, _ = await source.trace(request.path_params["saga_id"])
        if t is None:
            return _problem(404, f"no service has seen saga {request.path_params['saga_id']!r}")
        return await _svg(pictures.saga_path(registry, t))

    async def diagram(request: Request) -> Response:
        name = request.path_params["name"]
        drawers = {"choreography": pictures.choreography, "state-machine": pictures.state_machine}
        if name not in drawers:
            return _problem(404, f"no diagram {name!r}: choreography or state-machine")
        return await _svg(drawers[name](registry, await latest.get()))

    async def dead_letters(_: Request) -> Response:
        return JSONResponse(await source.dead_letters())

    async def replay(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _problem(415, "send the request as application/json")
        refused = _refusal(request, token)
        if refused is not None:
            return _problem(403, refused)
        try:
            body = await request.json()
        except ValueError:
            return _problem(400, "the body is not JSON")
        service, saga_id = body.get("service"), body.get("saga_id")
        if not isinstance(service, str) or not isinstance(saga_id, str):
            return _problem(400, "give service and saga_id, as strings")
        names = [s.name for s in registry.services]
        if service not in names:
            return _problem(400, f"unknown service {service!r}{did_you_mean(service, names)}")
        try:
            done = await source.replay(service, saga_id)
        except EngineError as exc:
            return _problem(409, str(exc))
        log.info(
            "replayed %d letter(s) of saga %s from %s", len(done["replayed"]), saga_id, service
        )
        return JSONResponse(done)

    async def stream(request: Request) -> Response:
        return StreamingResponse(
            _changes(request, latest),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store"},
        )

    loopback = listen.strip("[]") in _LOOPBACK
    middleware = (
        [Middleware(TrustedHostMiddleware, allowed_hosts=sorted(_LOOPBACK | {"[::1]"}))]
        if loopback
        else []
    )
    return Starlette(
        middleware=middleware,
        routes=[
            Route("/", page),
            Route("/api/overview", overview),
            Route("/api/sagas", sagas),
            Route("/api/sagas/{saga_id:path}/path.svg", saga_path),
            Route("/api/sagas/{saga_id:path}", saga),
            Route("/api/diagrams/{name}.svg", diagram),
            Route("/api/dead-letters", dead_letters),
            Route("/api/dead-letters/replay", replay, methods=["POST"]),
            Route("/api/stream", stream),
            Mount("/static", StaticFiles(directory=str(static)), name="static"),
        ],
    )


class _Latest:
    """The overview, read at most once per `every_s` however many pages watch it; a read
    that takes long (many sagas) spaces the next ones out further."""

    def __init__(self, source: Source, every_s: float) -> None:
        self._source = source
        self._every_s = every_s
        self._doc: dict[str, Any] | None = None
        self._until = 0.0
        self._lock = asyncio.Lock()

    @property
    def every_s(self) -> float:
        return self._every_s

    async def get(self) -> dict[str, Any]:
        async with self._lock:
            loop = asyncio.get_running_loop()
            if self._doc is None or loop.time() >= self._until:
                started = loop.time()
                self._doc = await self._source.overview()
                took = loop.time() - started
                self._until = loop.time() + max(self._every_s, 4 * took)
            return self._doc


async def _changes(request: Request, latest: _Latest) -> AsyncIterator[str]:
    """An `overview` event whenever the counts change (and once at first)."""
    last = None
    while not await request.is_disconnected():
        try:
            doc = await latest.get()
        except EngineError as exc:
            yield f"event: problem\ndata: {json.dumps(str(exc))}\n\n"
        else:
            seen = json.dumps([doc["counts"], doc["taken_in"], doc["notes"]], sort_keys=True)
            if seen != last:
                last = seen
                yield f"event: overview\ndata: {json.dumps(doc)}\n\n"
        await asyncio.sleep(latest.every_s)


def _refusal(request: Request, token: str | None) -> str | None:
    """Why this request (JSON) may not change anything, or None."""
    origin = request.headers.get("origin")
    if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
        return f"cross-origin request from {origin} refused"
    if token is not None:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return "a token is configured: send it as Authorization: Bearer TOKEN"
        return None
    host = request.client.host if request.client else ""
    if host not in _LOOPBACK:
        return f"changes are taken only from this machine (not {host}) unless a token is configured"
    # Sent from this machine, but to a name that is not this machine's: a page of another
    # site whose name was made to point here (DNS rebinding).
    named = request.headers.get("host", "").rsplit(":", 1)[0].strip("[]")
    if named not in _LOOPBACK:
        return f"changes are taken only when addressed to 127.0.0.1 or localhost, not {named}"
    return None


async def _svg(source: str) -> Response:
    try:
        return Response(await pictures.svg(source), media_type="image/svg+xml")
    except pictures.DrawingFailed as exc:
        return _problem(503, str(exc))


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


__all__: list[str] = ["make_app"]
