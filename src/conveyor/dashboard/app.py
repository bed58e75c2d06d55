"""The web dashboard (extra `conveyor[dashboard]`): an ASGI app, server-rendered with Jinja2,
calling only the registry's public API.

    app = create_app(registry, token="s3cret")            # serve with any ASGI server
    starlette_app.mount("/conveyor", create_app(registry))  # or under a path of yours

Pages: queues (counts per state, paused, jobs finished per minute over the last hour as the backend
counts them, live workers); the jobs of a queue in one state (filter by job name, paged); a job
(payload, metadata, each failed attempt's error and traceback, timings); lookup by id; schedules;
chains. Actions, each a POST carrying a CSRF token (double submit: a random cookie echoed in the
form): retry, cancel or delete a job; retry or purge a queue's failed jobs; pause or resume a
queue. `read_only=True` shows no action and refuses every POST. With `token`, every request needs
`Authorization: Bearer TOKEN`, or the cookie set by opening any page once with `?token=TOKEN`; with
`basic_auth=(user, password)`, HTTP basic auth. Jinja2's autoescaping shows payloads and errors as
text.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import socket
import time
import urllib.parse
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from conveyor.attempt import printable
from conveyor.core import RegistryCore
from conveyor.dashboard.actions import Refused, perform
from conveyor.drivers.base import Throughput
from conveyor.errors import BackendUnavailableError, ConfigError, ConveyorError, Unsupported
from conveyor.job import JobState
from conveyor.spec import check_name

try:
    import jinja2
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, RedirectResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
    from starlette.templating import Jinja2Templates
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        'conveyor.dashboard needs starlette and jinja2: pip install "conveyor[dashboard]"'
    ) from exc

HERE = Path(__file__).parent
PAGE_SIZE = 50
#: The last page a queue's list goes to: 50 billion jobs in, far below any backend's limit.
MAX_PAGE = 1_000_000_000
CSRF_COOKIE = "conveyor_csrf"
TOKEN_COOKIE = "conveyor_token"
#: The token of a `?token=` login, in a logged request line, whose name may come with any
#: letter %-escaped (`?%74oken=`: Starlette reads the name decoded, the log shows it as sent).
_TOKEN_IN_QUERY = re.compile(r"([?&](?:t|%74)(?:o|%6f)(?:k|%6b)(?:e|%65)(?:n|%6e)=)[^&\s]*", re.I)
#: Minutes of throughput the queues page draws, as bars (one a minute) of the backend's counts.
HISTORY_MINUTES = 60
#: Throughput reads the queues page keeps in flight at once: their round trips overlap, and
#: the backends' pools keep room for the workers a web app may host beside the dashboard.
READS_AT_ONCE = 8
#: The POST actions, by what they act on (conveyor.dashboard.actions.perform does them).
ACTIONS = {"jobs": ("retry", "cancel", "delete"),
           "queues": ("pause", "resume", "retry-failed", "purge-failed")}  # fmt: skip


async def _charts(registry: RegistryCore, queues: list[str]) -> dict[str, dict[str, Any]]:
    """Each queue's chart of its last hour, READS_AT_ONCE throughput reads at a time (one
    queue after another, 300 queues took 0.5 s on redis)."""
    slots = asyncio.Semaphore(READS_AT_ONCE)

    async def chart(queue: str) -> dict[str, Any]:
        async with slots:
            return _chart(await registry.throughput(queue, HISTORY_MINUTES))

    return dict(zip(queues, await asyncio.gather(*map(chart, queues)), strict=True))


def _chart(counted: Throughput | None, width: int = 240, height: int = 40) -> dict[str, Any]:
    """SVG bars of the jobs finished per minute (failed ones drawn on top, in their own
    colour), and the hour's totals; no bars without a history (amqp)."""
    chart: dict[str, Any] = {"width": width, "height": height, "bars": [], "known": False}
    if counted is None:
        return chart
    minutes = len(counted.succeeded)
    top = max((s + f for s, f in zip(counted.succeeded, counted.failed, strict=True)), default=0)
    step = width / max(minutes, 1)
    for minute, (ok, bad) in enumerate(zip(counted.succeeded, counted.failed, strict=True)):
        if ok + bad:
            full = (ok + bad) / top * height
            failed = bad / top * height
            chart["bars"].append(
                {"x": f"{minute * step:.1f}", "w": f"{max(step - 1, 1):.1f}",
                 "y": f"{height - full:.1f}", "h": f"{full:.1f}", "fh": f"{failed:.1f}",
                 "title": f"{ok} succeeded, {bad} failed"}
            )  # fmt: skip
    chart.update(known=True, succeeded=sum(counted.succeeded), failed=sum(counted.failed))
    return chart


def create_app(
    registry: RegistryCore,
    *,
    read_only: bool = False,
    token: str | None = None,
    basic_auth: tuple[str, str] | None = None,
) -> Starlette:
    """The dashboard of `registry` as an ASGI app; see the module docstring."""
    if _blank(token) or (basic_auth is not None and any(map(_blank, basic_auth))):
        raise ConfigError(
            "the dashboard's token or basic-auth user or password is empty (or only spaces),"
            " which is no secret: give the secret (is its environment variable set?), or None"
            " for no login"
        )
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True, finalize=_text
    )
    templates = Jinja2Templates(env=env)
    templates.env.filters["timestamp"] = _timestamp
    # An id in a link or a form's action, every character but letters, digits and -._~
    # escaped: a job id stored by another program ("../queues/mail/purge-failed?") would
    # otherwise point a job's Retry button at another action.
    templates.env.filters["segment"] = lambda text: urllib.parse.quote(str(text), safe="")

    def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        context.update(read_only=read_only, csrf=csrf, root=request.scope.get("root_path", ""))
        response = templates.TemplateResponse(request, template, context, status_code=status)
        if request.cookies.get(CSRF_COOKIE) != csrf:
            response.set_cookie(CSRF_COOKIE, csrf, **_cookie(request))
        return response

    async def queues(request: Request) -> Response:
        seen = await registry.overview()  # a backend down: its queues say so, the rest show
        if seen.down and not seen.counts:
            raise BackendUnavailableError(next(iter(seen.down.values())))  # 503: none answered
        charts = await _charts(registry, list(seen.counts))
        return render(
            request, "queues.html", queues=seen.counts, paused=seen.paused, down=seen.down,
            controlled=seen.controlled, workers=seen.alive, charts=charts, now=time.time(),
            uncounted=seen.uncounted, unshared=seen.unshared,
        )  # fmt: skip

    async def jobs(request: Request) -> Response:
        queue = request.path_params["queue"]
        registry.freeze()  # the implicit queue exists only once frozen
        if queue not in registry.queues:
            return PlainTextResponse(f"no queue is called {queue!r}", status_code=404)
        try:
            state = JobState(request.query_params.get("state", "failed"))
            page = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            return PlainTextResponse("state must be a job state; page a number", status_code=400)
        if page > MAX_PAGE:  # an offset past what the backends' integers hold
            return PlainTextResponse(f"page must be a number from 1 to {MAX_PAGE}", 400)
        name = request.query_params.get("name", "").strip()
        if name:
            try:
                check_name("job", name)  # no job has another name, and NUL breaks postgres
            except ConveyorError as exc:
                return PlainTextResponse(str(exc), status_code=400)
        try:
            found = await registry.list_jobs(
                queue, state, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE, name=name or None
            )
        except Unsupported as exc:  # amqp lists only failed jobs; the queues page links all
            return PlainTextResponse(str(exc), status_code=501)
        more = len(found) > PAGE_SIZE
        shown = found[:PAGE_SIZE]
        return render(
            request, "jobs.html", queue=queue, state=state.value, states=list(JobState),
            jobs=shown, page=page, more=more, name=name,
            findable=await _can(registry, queue, "lookup"),
        )  # fmt: skip

    async def job(request: Request) -> Response:
        job_id = request.path_params.get("job_id") or request.query_params.get("id", "").strip()
        try:
            info = await registry.job_info(job_id) if job_id else None
        except BackendUnavailableError:
            raise  # not "no such job": the job may well be there (answered 503)
        except ConveyorError:
            info = None
        if info is None:
            blind = [q for q in registry.queues if not await _can(registry, q, "lookup")]
            code = 404 if job_id else 200  # no such job; a blank search is no error
            return render(request, "missing.html", code, job_id=job_id, blind=blind)
        if "job_id" not in request.path_params:
            path = urllib.parse.quote(info.id, safe="")
            return RedirectResponse(f"{request.scope.get('root_path', '')}/jobs/{path}", 303)
        return render(
            request, "job.html", job=info, payload=_pretty(info.payload),
            meta=json.dumps(info.meta, indent=2, sort_keys=True), result=_pretty(info.result),
        )  # fmt: skip

    async def schedules(request: Request) -> Response:
        registry.freeze()  # the configuration file's schedules too
        rows = []
        for name, item in registry.schedules.items():
            queue = registry.schedule_queue(item)
            tick = None
            if registry.driver_for(queue).unmade() is None:  # none in a store not made yet
                with contextlib.suppress(ConveyorError):  # a driver without schedules
                    tick = (await (await registry.driver_of(queue)).ticks([name])).get(name)
            last = None if tick is None else await registry.job_info(tick.job_id)
            rows.append((name, item, queue, item.next_ticks(3), tick, last))
        return render(request, "schedules.html", rows=rows)

    async def chain(request: Request) -> Response:
        chain_id = request.path_params.get("chain_id") or request.query_params.get("id", "")
        info = await registry.chain_info(chain_id.strip()) if chain_id.strip() else None
        return render(
            request, "chain.html", 404 if info is None and chain_id.strip() else 200,
            chain_id=chain_id, info=info, cursor=None if info is None else json.dumps(info.cursor),
        )  # fmt: skip

    async def confirm_purge(request: Request, queue: str, back: str) -> Response:
        registry.freeze()  # the implicit queue exists only once frozen
        if queue not in registry.queues:
            return PlainTextResponse(f"no queue called {queue!r}", status_code=404)
        counted = await (await registry.driver_of(queue)).counts([queue])  # that backend only
        failed = counted[queue].failed
        return render(request, "confirm.html", queue=queue, failed=failed, back=back)

    async def act(kind: str, action: str, request: Request) -> Response:
        if read_only:
            return PlainTextResponse("the dashboard is read-only", status_code=403)
        form = await request.form()
        cookie = request.cookies.get(CSRF_COOKIE, "")
        given = str(form.get("csrf", ""))
        if not cookie or not hmac.compare_digest(cookie, given):
            return PlainTextResponse(
                "missing or wrong CSRF token: reload the page and try again", status_code=403
            )
        target = request.path_params["target"]
        back = str(form.get("back", "")) or "/"
        if not back.startswith("/") or back.startswith("//") or "\\" in back:
            back = "/"  # a browser reads /\host as //host: another site
        if (kind, action) == ("queues", "purge-failed") and form.get("confirmed") != "yes":
            return await confirm_purge(request, target, back)  # asked first, as the CLI does
        try:
            queue = str(form.get("queue", ""))
            await perform(registry, kind, action, target, queue)
        except (Refused, ConveyorError, ValueError) as exc:  # refused: 404 or 409; else 400
            down = isinstance(exc, BackendUnavailableError)  # 503: the backend, not the request
            status = getattr(exc, "status", 503 if down else 400)
            return PlainTextResponse(f"{action} failed: {exc}", status_code=status)
        return RedirectResponse(f"{request.scope.get('root_path', '')}{back}", status_code=303)

    app = Starlette(
        routes=[
            Route("/", queues),
            Route("/queues/{queue}", jobs),
            Route("/jobs", job),
            Route("/jobs/{job_id}", job),
            Route("/schedules", schedules),
            Route("/chains", chain),
            Route("/chains/{chain_id}", chain),
            *[  # each action a route: a path naming none is not found (404), not a wrong method
                Route(f"/{kind}/{{target}}/{action}", partial(act, kind, action), methods=["POST"])
                for kind, actions in ACTIONS.items()
                for action in actions
            ],
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ],
        exception_handlers={BackendUnavailableError: _unavailable},
    )
    if token is not None or basic_auth is not None:
        return _Hardened(_Guarded(app, token, basic_auth))  # type: ignore[return-value]
    return _Hardened(app)  # type: ignore[return-value]


async def serve(
    registry: RegistryCore,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    read_only: bool = False,
    token: str | None = None,
    basic_auth: tuple[str, str] | None = None,
) -> None:
    """Serve the dashboard with uvicorn on the running loop until cancelled or interrupted
    (`conveyor dashboard --app ... --port 8080`)."""
    try:
        import uvicorn
    except ImportError as exc:
        raise ImportError(
            'serving the dashboard needs uvicorn: pip install "conveyor[dashboard]"'
        ) from exc

    app = create_app(registry, read_only=read_only, token=token, basic_auth=basic_auth)
    # Logged through the handlers set up (`conveyor --log-format json`, or the application's),
    # in their format; with none set up, uvicorn's own print as uvicorn prints them.
    own = None if logging.getLogger().handlers else uvicorn.config.LOGGING_CONFIG
    config = uvicorn.Config(app, host=host, port=port, log_level="info", log_config=own)

    class Server(uvicorn.Server):
        """uvicorn's, but a stop's signal ends `serve`: uvicorn sent it again once shut down,
        which ended `conveyor dashboard` by SIGTERM (status 143) or in "Aborted!" (status 1)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                self._captured_signals.clear()

    server = Server(config)
    # Bound here, not by uvicorn, which logs why it cannot and exits with status 3. It listens
    # only once uvicorn starts serving it, after uvicorn took over SIGTERM and SIGINT: a signal
    # sent as soon as the port answers (a service manager's stop) ends the dashboard cleanly.
    bound = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        bound.bind((host, port))
    except OSError as exc:
        bound.close()
        raise ConfigError(
            f"cannot serve the dashboard on {host}:{port} ({exc}): choose a free port with "
            "--port, or another address with --host"
        ) from exc
    if token is None and basic_auth is None and not _loopback(host):
        can = "read every job's payload" if read_only else "retry, cancel, delete and purge jobs"
        logging.getLogger("conveyor.dashboard").warning(
            "the dashboard on %s:%d asks for no login: anyone who can reach it can %s;"
            " give --token or --basic-auth, or serve it on 127.0.0.1", host, port, can,
        )  # fmt: skip
    access = logging.getLogger("uvicorn.access")
    access.addFilter(_masked_token)  # after the Config, which sets up uvicorn's loggers
    try:
        with bound:  # uvicorn says where it runs only when it binds itself
            shown = f"[{host}]" if ":" in host else host  # an IPv6 address, as URLs write it
            logging.getLogger("uvicorn.error").info("Uvicorn running on http://%s:%d", shown, port)
            await server.serve(sockets=[bound])
    finally:
        access.removeFilter(_masked_token)


async def _unavailable(request: Request, exc: Exception) -> Response:
    """A page whose backend cannot be reached: 503 naming it, not a bare 500."""
    return PlainTextResponse(str(exc), status_code=503)


def _loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any address
        return False


def _masked_token(record: logging.LogRecord) -> bool:
    """Logs the request line of a `?token=` login with the token masked (in the path among the
    record's arguments, which uvicorn's access formatter reads one by one)."""
    if isinstance(record.args, tuple):
        record.args = tuple(
            _TOKEN_IN_QUERY.sub(r"\1***", arg) if isinstance(arg, str) else arg
            for arg in record.args
        )
    return True


async def _can(registry: RegistryCore, queue: str, ability: str) -> bool:
    """Whether the backend of `queue` has `ability` (amqp finds no job by id, pauses nothing),
    told by its driver unopened: a SQLite store not made yet is not created to say so."""
    try:
        return bool(getattr(registry.driver_for(queue).capabilities, ability))
    except ConveyorError:  # a driver that cannot be made: its jobs cannot be looked up either
        return False


def _timestamp(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _text(value: Any) -> Any:
    """What a page shows of `value`: bytes that were not UTF-8 when read (a damaged record, kept
    as lone surrogates) as \\x escapes, bidirectional overrides (they reorder what is shown
    around them) as \\u escapes, as the logs show them. Markup (a macro's form) stays markup."""
    if not isinstance(value, str) or value.isascii():
        return value
    shown = _BIDI.sub(lambda found: f"\\u{ord(found[0]):04x}", printable(value))
    return value if shown == value else type(value)(shown)


_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")  # embeddings, overrides, isolates


def _pretty(text: str | None) -> str:
    if text is None:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than json reads
        return text


#: Sent with every response: no page may be framed (a framed page's buttons can be clicked
#: through a decoy: clickjacking), no script runs, forms post only to the dashboard itself.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; style-src 'self'; img-src 'self'; "
     b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]  # fmt: skip


class _Hardened:
    """Adds SECURITY_HEADERS to every HTTP response of `app`, static files and refusals too."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def send_hardened(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_hardened if scope["type"] == "http" else send)


class _Guarded:
    """Lets a request through only with the token (header, cookie, or ?token= once, which
    sets the cookie) or the basic-auth credentials."""

    def __init__(self, app: Starlette, token: str | None, basic: tuple[str, str] | None) -> None:
        self.app = app
        self.token = token
        self.basic = basic

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self._allowed(request):
            await self.app(scope, receive, send)
            return
        if self.token is not None and _same(request.query_params.get("token", ""), self.token):
            response: Response = RedirectResponse(request.url.remove_query_params("token"), 303)
            response.set_cookie(TOKEN_COOKIE, self.token, **_cookie(request))
        elif self.basic is not None:
            response = PlainTextResponse(
                "log in", status_code=401, headers={"WWW-Authenticate": 'Basic realm="conveyor"'}
            )
        else:
            response = PlainTextResponse(
                "a token is needed: Authorization: Bearer TOKEN, or open ?token=TOKEN once",
                status_code=401,
            )
        await response(scope, receive, send)

    def _allowed(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if self.token is not None:
            if header[:7].lower() == "bearer " and _same(header[7:], self.token):
                return True
            if _same(request.cookies.get(TOKEN_COOKIE, ""), self.token):
                return True
        if self.basic is not None and header[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return False
            return _same(user, self.basic[0]) & _same(password, self.basic[1])
        return False


def _cookie(request: Request) -> dict[str, Any]:
    """How the dashboard's cookies are set: out of scripts' reach, never sent by another
    site, only to the dashboard's own path (mounted, not to the rest of the application),
    and only over https when the page came over https."""
    path = request.scope.get("root_path", "") or "/"
    secure = request.url.scheme == "https"
    return {"httponly": True, "samesite": "strict", "path": path, "secure": secure}


def _same(given: str, wanted: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), wanted.encode())


def _blank(secret: str | None) -> bool:
    """Whether a secret given is empty or only whitespace (None: no login asked for)."""
    return secret is not None and not secret.strip()
