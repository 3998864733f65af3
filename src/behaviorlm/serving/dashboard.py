"""A one-page web dashboard over the REST API: store overview, anomalous users, a user's activity,
recommendations with the events behind them, profile and segment map, and the population reports
(effects by segment, bias audit, Qini curves).

Why it looks like this: the page is a static, server-rendered HTML string with inline CSS and vanilla
JavaScript, so there is no front-end build, and nothing is fetched from anywhere but the service itself
(the Content-Security-Policy only allows this origin). Every chart is inline SVG built element by element
by the page's own script from the JSON the API returns: no chart library, no fonts, no CDN. The page
holds no data and needs no server-side auth: the user types an API key, which is kept in
``sessionStorage`` (gone when the tab closes) and sent as ``X-API-Key`` with each ``fetch()`` to the
JSON API, which enforces keys and scopes as for any client. Every value from the API (user ids, item ids
and titles, event types, quarantine reasons, the reports' labels) is untrusted and reaches the page only
through ``textContent`` and attribute values, never ``innerHTML``. The segment map comes from the service
as SVG, drawn server-side: the page parses it as XML and rebuilds it element by element from a short list
of SVG elements and attributes (no scripts, links, styles or event handlers can come through), so it is
shown inline without loosening the Content-Security-Policy.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from behaviorlm import __version__

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline' 'self'"
)
"""Inline script and style are this page's own; fetch(), images and everything else: this origin only."""

TIMELINE_LIMIT = 100
"""Latest events of a user listed in the timeline table (the events endpoint's default); the activity
chart counts all of them."""

TOP_K = 10
"""Recommendations shown for a user."""


STATIC = Path(__file__).parent / "static"
"""The page's sources, shipped as package data: ``dashboard.html`` (the template), ``dashboard.css``,
``dashboard.js`` and ``icon.svg`` (without an icon, browsers ask for ``/favicon.ico`` and log the 404)."""


def render_dashboard() -> str:
    """The dashboard page: the template with its stylesheet and script inlined (one request, one CSP) and
    this package's version and the display limits filled in."""
    page = (STATIC / "dashboard.html").read_text(encoding="utf-8")
    page = page.replace("__CSS__", (STATIC / "dashboard.css").read_text(encoding="utf-8"))
    page = page.replace("__JS__", (STATIC / "dashboard.js").read_text(encoding="utf-8"))
    return (
        page.replace("__VERSION__", __version__)
        .replace("__LIMIT__", str(TIMELINE_LIMIT))
        .replace("__K__", str(TOP_K))
    )


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at ``GET /dashboard`` (kept out of the OpenAPI schema: it is not API).

    The page is rendered once; its response carries the CSP, forbids framing (the page takes an API key)
    and is not cached, so a new deployment's page is picked up at once.
    """
    page = render_dashboard()
    icon = (STATIC / "icon.svg").read_text(encoding="utf-8").strip()
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }

    @app.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> HTMLResponse:
        """The dashboard page (static: data comes from the API, with the key typed into the page)."""
        return HTMLResponse(page, headers=headers)

    @app.get("/dashboard/icon.svg", include_in_schema=False)
    def dashboard_icon() -> Response:
        """The page's icon: a fixed SVG that may run and load nothing."""
        return Response(
            icon,
            media_type="image/svg+xml",
            headers={"Content-Security-Policy": "default-src 'none'", "X-Content-Type-Options": "nosniff"},
        )
