"""The review console: a server-rendered Starlette app (Jinja2 templates, htmx for in-place updates).

Every page but the login needs a signed session cookie (HttpOnly, SameSite=Strict); every POST after
login carries the session's CSRF token. Prompts are shown masked; `reveal` returns one prompt's text to
a logged-in analyst and writes an audit entry first, so no text is shown without a record of who saw it.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from distillguard.ui.auth import SESSION_COOKIE, LoginThrottle, Sessions, csrf_ok
from distillguard.ui.decisions import DECISIONS, DecisionError, ReviewStore
from distillguard.ui.scan_view import ScanView

HERE = Path(__file__).parent
MAX_NOTE = 2000
# A queue of tens of thousands of flagged accounts is paged: the page stays small however big the scan
PER_PAGE, MAX_PER_PAGE = 100, 1000
# Only our own script and inline styles; no third-party origin can be loaded or framed in
CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'"


def _int_param(raw: str | None, default: int, lo: int, hi: int) -> int:
    """A query parameter as an int clamped to [lo, hi]; anything unreadable gives the default."""
    try:
        return min(hi, max(lo, int(raw))) if raw is not None else default
    except ValueError:
        return default


def create_app(
    view: ScanView,
    store: ReviewStore,
    secret: str | None = None,
    secure_cookie: bool = False,
    throttle: LoginThrottle | None = None,
) -> Starlette:
    """The console over one scan (`view`), storing decisions and audit entries in `store`."""
    sessions = Sessions(secret or secrets.token_urlsafe(32))
    throttle = throttle or LoginThrottle()
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    scan_name = str(view.scan_dir)

    def render(
        request: Request, name: str, status: int = 200, headers: dict[str, str] | None = None, **ctx: Any
    ) -> HTMLResponse:
        ctx.setdefault("user", None)
        ctx.setdefault("csrf", None)
        html = env.get_template(name).render(url_for=request.url_for, **ctx)
        return HTMLResponse(
            html, status_code=status, headers={"Content-Security-Policy": CSP, **(headers or {})}
        )

    def session(request: Request) -> tuple[str, str] | None:
        return sessions.read(request.cookies.get(SESSION_COOKIE))

    async def checked_form(request: Request) -> tuple[str, Any] | Response:
        """(user, form) of a logged-in POST with a valid CSRF token, or the refusal."""
        s = session(request)
        if s is None:
            return Response("log in first", status_code=401)
        form = await request.form()
        token = form.get("csrf") or request.headers.get("x-csrf-token")
        if not csrf_ok(s[1], token if isinstance(token, str) else None):
            return Response("missing or wrong CSRF token", status_code=403)
        return s[0], form

    async def login_page(request: Request) -> Response:
        return render(request, "login.html")

    async def login(request: Request) -> Response:
        form = await request.form()
        name, password = str(form.get("name") or ""), str(form.get("password") or "")
        address = request.client.host if request.client else "-"
        wait = throttle.retry_after(address, name[:100])
        if wait > 0:
            # refused before the password is checked: a guess made while throttled tells nothing
            store.audit(name[:100] or "-", "login_throttled")
            secs = math.ceil(wait)
            return render(
                request,
                "login.html",
                status=429,
                headers={"Retry-After": str(secs)},
                error=f"too many failed logins: try again in {secs} s",
            )
        # scrypt takes ~50 ms of CPU: off the event loop, so other analysts' pages are not held up
        ok = bool(name) and await asyncio.to_thread(store.check_login, name, password)
        if not ok:
            # the attempted name is recorded, the password never
            throttle.failed(address, name[:100])
            store.audit(name[:100] or "-", "login_failed")
            return render(request, "login.html", status=401, error="wrong name or password")
        throttle.succeeded(address, name[:100])
        store.audit(name, "login")
        cookie, _csrf = sessions.issue(name)
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(
            SESSION_COOKIE, cookie, max_age=sessions.max_age_s, httponly=True, samesite="strict",
            secure=secure_cookie, path="/",
        )  # fmt: skip
        return resp

    async def logout(request: Request) -> Response:
        res = await checked_form(request)
        if isinstance(res, Response):
            return res
        store.audit(res[0], "logout")
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    async def queue(request: Request) -> Response:
        s = session(request)
        if s is None:
            return RedirectResponse("/login", status_code=303)
        qp = request.query_params
        per = _int_param(qp.get("per"), PER_PAGE, 1, MAX_PER_PAGE)
        query = (qp.get("q") or "")[:200]
        undecided = qp.get("show") == "undecided"
        decisions = store.decisions()
        hide = decisions.keys() if undecided else ()
        pages: dict[str, Any] = {}
        for kind, param in (("account", "page"), ("campaign", "cpage")):
            page = _int_param(qp.get(param), 1, 1, 10**9)
            rows, total = view.queue(kind, offset=(page - 1) * per, limit=per, query=query, hide=hide)
            last = max(1, -(-total // per))
            if page > last:  # past the end (decisions hid rows since the link was made): show the last page
                page = last
                rows, total = view.queue(kind, offset=(page - 1) * per, limit=per, query=query, hide=hide)
            pages[kind] = {"rows": rows, "total": total, "page": page, "last": last, "param": param}
        base = {"per": per, "q": query, "show": "undecided" if undecided else "all"}
        return render(
            request, "queue.html", user=s[0], csrf=s[1], scan=scan_name, min_score=view.min_score,
            accounts=pages["account"], campaigns=pages["campaign"], decisions=decisions,
            base=base, link=lambda **kw: "/?" + urlencode({**base, **kw}),
        )  # fmt: skip

    async def subject(request: Request) -> Response:
        s = session(request)
        if s is None:
            return RedirectResponse("/login", status_code=303)
        kind, sid = request.path_params["kind"], request.path_params["sid"]
        subj = view.subject(kind, sid)
        if subj is None:
            return render(
                request, "login.html", status=404, user=s[0], csrf=s[1], error=f"no flagged {kind} {sid}"
            )
        return render(
            request, "subject.html", user=s[0], csrf=s[1], s=subj, examples=view.examples(subj),
            decision=store.decisions().get(sid),
        )  # fmt: skip

    async def reveal(request: Request) -> Response:
        res = await checked_form(request)
        if isinstance(res, Response):
            return res
        user, form = res
        kind, sid = request.path_params["kind"], request.path_params["sid"]
        subj = view.subject(kind, sid)
        ex = str(form.get("exchange_id") or "")
        if subj is None:
            return Response(f"no flagged {kind} {sid}", status_code=404)
        # audit before reading: an analyst who saw the text is always on record
        store.audit(user, "reveal", sid, f"exchange {ex}")
        text = view.reveal(subj, ex)
        if text is None:
            return Response(f"exchange {ex} is not one of {kind} {sid}'s", status_code=404)
        if request.headers.get("hx-request"):
            return render(request, "_revealed.html", text=text)
        return render(request, "subject.html", user=user, csrf=form.get("csrf"), s=subj,
                      examples=view.examples(subj), decision=store.decisions().get(sid), revealed=text)  # fmt: skip

    async def decide(request: Request) -> Response:
        res = await checked_form(request)
        if isinstance(res, Response):
            return res
        user, form = res
        kind, sid, decision = str(form.get("kind")), str(form.get("subject")), str(form.get("decision"))
        note = str(form.get("note") or "")[:MAX_NOTE]
        subj = view.subject(kind, sid)
        if subj is None:
            return Response(f"no flagged {kind} {sid}", status_code=404)
        if decision not in DECISIONS:
            return Response(f"decision {decision!r}: expected one of {', '.join(DECISIONS)}", status_code=400)
        try:
            store.decide(user, sid, kind, decision, scan_name, subj.score, note or None)
        except DecisionError as e:
            return Response(str(e), status_code=500)
        if request.headers.get("hx-request"):
            return render(request, "_decision.html", s=subj, decision=store.decisions().get(sid))
        return RedirectResponse(f"/{kind}/{sid}", status_code=303)

    routes = [
        Route("/", queue),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/decide", decide, methods=["POST"]),
        Route("/reveal/{kind:str}/{sid:str}", reveal, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        Route("/{kind:str}/{sid:str}", subject),
    ]
    return Starlette(routes=routes)
