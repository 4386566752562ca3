"""The review page's web app: static files shipped in the package and a small JSON API.

Security, because the page can change the store: it listens on 127.0.0.1 unless told
otherwise; every request must carry the random token printed with the URL (the first
page load takes it from the URL and leaves a SameSite=Strict cookie, so the page's own
files load); API calls carry it in the ``X-Labeler-Token`` header, which a page on another
site cannot set without a CORS preflight this app never grants, and a decision is a POST
with a JSON body (another content type is refused). The page writes text with
``textContent`` and a strict Content-Security-Policy forbids inline script, so input text
cannot run. Only task labels, row fields and the teacher's name reach the page, never
the teacher's options or keys.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from labeler.errors import ConfigError
from labeler.human import record_label, remove_label
from labeler.review.index import ReviewIndex, ReviewQuery
from labeler.store import Store

TOKEN_HEADER = "X-Labeler-Token"
COOKIE = "labeler_review_token"
STATIC_FILES = {"review.js": "text/javascript", "review.css": "text/css"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class ReviewState:
    """What the app serves: the queue, the store decisions go to, and who decides."""

    index: ReviewIndex
    store: Store
    reviewer: str
    teacher: str
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))


def make_app(state: ReviewState) -> web.Application:
    app = web.Application(middlewares=[_guard])
    app["state"] = state
    app.router.add_get("/", _page)
    app.router.add_get("/static/{name}", _static)
    app.router.add_get("/api/meta", _meta)
    app.router.add_get("/api/rows", _rows)
    app.router.add_post("/api/label", _label)
    app.router.add_post("/api/pick", _pick)
    return app


def check_host(host: str, *, allow_remote: bool) -> str | None:
    """None for a loopback host; else the warning to print (or an error without the flag)."""
    if host in LOOPBACK:
        return None
    if not allow_remote:
        raise ConfigError(
            f"--host {host}: the review page can change the store; binding "
            "beyond 127.0.0.1 needs --allow-remote"
        )
    return (
        f"the review page listens on {host}: anyone who can reach this machine and "
        "learns the token can change human labels"
    )


async def start(state: ReviewState, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str]:
    """Start serving; returns the runner (cleanup stops it) and the URL with the token."""
    runner = web.AppRunner(make_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{bound}/?token={state.token}"


# -- guard ----------------------------------------------------------------------------------


@web.middleware
async def _guard(request: web.Request, handler: Any) -> web.StreamResponse:
    state: ReviewState = request.app["state"]
    if not _authorized(request, state.token):
        return _with_headers(web.Response(status=403, text="403: a valid token is required\n"))
    response = await handler(request)
    return _with_headers(response)


def _authorized(request: web.Request, token: str) -> bool:
    if request.path.startswith("/api/"):
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return False  # another site's page, whatever it carries
        given = request.headers.get(TOKEN_HEADER, "")
    else:
        given = request.query.get("token") or request.cookies.get(COOKIE, "")
    # Header bytes that are not UTF-8 arrive as lone surrogates, which a strict encode
    # refuses: that is a wrong token (403), not a crash of the check (500).
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode())


def _with_headers(response: web.StreamResponse) -> web.StreamResponse:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


# -- handlers -------------------------------------------------------------------------------


def _asset(name: str) -> str:
    return resources.files("labeler.review").joinpath("static", name).read_text("utf-8")


async def _page(request: web.Request) -> web.StreamResponse:
    state: ReviewState = request.app["state"]
    html = _asset("index.html").replace("{{token}}", state.token)
    response = web.Response(text=html, content_type="text/html")
    response.set_cookie(COOKIE, state.token, httponly=True, samesite="Strict", path="/")
    return response


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return web.Response(text=_asset(name), content_type=STATIC_FILES[name])


async def _meta(request: web.Request) -> web.StreamResponse:
    state: ReviewState = request.app["state"]
    index = state.index
    return _json(
        {
            "task": index.task.name,
            "labels": list(index.labels),
            "teacher": state.teacher,
            "reviewer": state.reviewer,
            "total": len(index.items),
            "reviewed": index.reviewed,
            "missing": index.missing,
            "queued": index.queued,
            "disagree": index.disagree,
            "samples": any(it.samples is not None for it in index.items),
        }
    )


async def _rows(request: web.Request) -> web.StreamResponse:
    state: ReviewState = request.app["state"]
    q = request.query
    try:
        query = ReviewQuery(
            label=q.get("label") or None,
            min_conf=_number(q.get("min")),
            max_conf=_number(q.get("max")),
            text=q.get("q", ""),
            status=q.get("status", "all"),
            offset=int(q.get("offset", "0")),
            limit=int(q.get("limit", "50")),
        )
    except (ValueError, ConfigError) as exc:
        return _json({"error": str(exc)}, status=400)
    return _json(state.index.page(query))


async def _label(request: web.Request) -> web.StreamResponse:
    state: ReviewState = request.app["state"]
    if request.content_type != "application/json":
        return _json({"error": "a decision is a JSON body (application/json)"}, status=415)
    try:
        body = orjson.loads(await request.read())
        key, label = body["key"], body.get("label")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return _json({"error": 'expected {"key": ..., "label": LABEL or null}'}, status=400)
    item = state.index.by_key.get(key) if isinstance(key, str) else None
    if item is None:
        return _json({"error": "no such row"}, status=404)
    if label is not None and label not in state.index.labels:
        return _json({"error": f"'{label}' is not a label of the task"}, status=400)
    previous = item.human
    if label is None:
        await asyncio.to_thread(remove_label, state.store, key)
    else:
        await asyncio.to_thread(
            record_label,
            state.store,
            key,
            label,
            reviewer=state.reviewer,
            teacher_label=item.label,
            row_id=item.row_id,
            task=state.index.task.identity,
        )
    state.index.decide(key, label)
    return _json(
        {
            "key": key,
            "human": label,
            "previous": previous,
            "reviewed": state.index.reviewed,
            "total": len(state.index.items),
        }
    )


async def _pick(request: web.Request) -> web.StreamResponse:
    """A person picks one answer of a generation row as the row's answer (`sample`:
    null takes the pick back). Stored as a human label whose label is the answer's text,
    under the row's answer key: the export keeps it whatever the verdicts said."""
    state: ReviewState = request.app["state"]
    if request.content_type != "application/json":
        return _json({"error": "a decision is a JSON body (application/json)"}, status=415)
    try:
        body = orjson.loads(await request.read())
        key, sample = body["key"], body.get("sample")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return _json({"error": 'expected {"key": ..., "sample": N or null}'}, status=400)
    item = state.index.by_key.get(key) if isinstance(key, str) else None
    if item is None:
        return _json({"error": "no such row"}, status=404)
    if item.samples is None:
        return _json({"error": "this row has no answers to pick from; decide with a label"}, status=400)
    if sample is not None and (
        isinstance(sample, bool) or not isinstance(sample, int) or not 0 <= sample < len(item.samples)
    ):
        return _json({"error": f"sample must be 0..{len(item.samples) - 1} or null"}, status=400)
    previous = item.pick
    text = None if sample is None else str(item.samples[sample]["text"])
    if text is None:
        await asyncio.to_thread(remove_label, state.store, key)
    else:
        await asyncio.to_thread(
            record_label,
            state.store,
            key,
            text,
            reviewer=state.reviewer,
            row_id=item.row_id,
            task=state.index.task.identity,
        )
    state.index.decide(key, text)
    return _json(
        {
            "key": key,
            "pick": item.pick,
            "previous": previous,
            "reviewed": state.index.reviewed,
            "total": len(state.index.items),
        }
    )


def _number(text: str | None) -> float | None:
    return None if text is None or text.strip() == "" else float(text)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")
