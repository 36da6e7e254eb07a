"""A small, robust HTTP GET layer for the dataset collectors.

Standard library only (``urllib``), or ``urllib3`` when it is installed (it
keeps connections alive, which matters for thousands of small requests).
The client is safe to share between the threads of a pool and provides:

- a rate limiter (requests per second, shared by all threads);
- retries with exponential backoff and full jitter on 429, 5xx, connection
  errors, timeouts and truncated bodies, honouring ``Retry-After``;
- a request budget: every request sent (retries included) is counted, and
  :class:`BudgetExhausted` is raised once it is spent;
- redaction: API keys, URL signatures, access tokens and ``Authorization``
  headers never appear in an exception message or a log line produced here.
"""
from __future__ import annotations

import email.utils
import http.client
import logging
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

try:  # optional: connection pooling
    import urllib3
except ImportError:  # pragma: no cover - exercised only without urllib3
    urllib3 = None

REDACTED = "REDACTED"
SECRET_PARAMS = ("key", "signature", "access_token", "client_secret", "token")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

_PARAM_RE = re.compile(r"(?i)([?&;](?:%s)=)[^&#\s\"'<>]*" % "|".join(SECRET_PARAMS))
_JSON_PARAM_RE = re.compile(r"(?i)(\"(?:%s)\"\s*:\s*\")[^\"]*" % "|".join(SECRET_PARAMS))
_AUTH_RE = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(?:(?:oauth|bearer|basic|token)\s+)?[^\s'\",}]+")
_SCHEME_RE = re.compile(r"(?i)\b((?:oauth|bearer)\s+)[A-Za-z0-9._~+/=|-]{8,}")


def redact(text: object, secrets: Iterable[str] = ()) -> str:
    """Return ``str(text)`` with credentials replaced by ``REDACTED``.

    Removes the values of the query parameters ``key``, ``signature``,
    ``access_token`` (and ``client_secret``, ``token``), ``Authorization``
    header values, ``OAuth``/``Bearer`` tokens, and every exact occurrence of
    the given ``secrets`` (so a key echoed back in an error body is caught too).
    """
    out = str(text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            out = out.replace(secret, REDACTED)
    out = _PARAM_RE.sub(r"\1" + REDACTED, out)
    out = _JSON_PARAM_RE.sub(r"\1" + REDACTED, out)
    out = _AUTH_RE.sub(r"\1" + REDACTED, out)
    return _SCHEME_RE.sub(r"\1" + REDACTED, out)


_SECRETS: set[str] = set()  # every secret any client was given: scrubbed from third-party logs
_SECRETS_LOCK = threading.Lock()
# Loggers of the HTTP stack that print request URLs (urllib3 logs "GET /path?key=..." at DEBUG).
_THIRD_PARTY_LOGGERS = ("urllib3", "urllib3.connectionpool", "urllib3.poolmanager", "urllib3.response",
                        "urllib3.util.retry", "urllib3.connection")


class RedactingFilter(logging.Filter):
    """Rewrites log records so that no credential reaches any handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error path
            return True
        with _SECRETS_LOCK:
            secrets = tuple(_SECRETS)
        record.msg, record.args = redact(message, secrets), ()
        return True


def register_secrets(*secrets: str) -> None:
    """Remember credentials so third-party HTTP loggers are scrubbed of them too."""
    with _SECRETS_LOCK:
        _SECRETS.update(s for s in secrets if s)
    for name in _THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())


class HttpError(Exception):
    """A request that failed for good (after retries, or not retryable).

    ``status`` is the HTTP status (``None`` for connection errors/timeouts),
    ``url`` the redacted URL, ``body`` the first bytes of the response body
    (redacted text), ``reason`` a short explanation. The message never holds a
    credential.
    """

    def __init__(self, url: str, reason: str, status: int | None = None, body: str = ""):
        self.url, self.reason, self.status, self.body = url, reason, status, body
        super().__init__(f"GET {url} failed: {reason}")


class BudgetExhausted(Exception):
    """The request budget of this run is spent; nothing more is sent."""

    def __init__(self, limit: int):
        self.limit = limit
        super().__init__(
            f"request budget of {limit} requests exhausted; rerun to continue (--budget counts per run)"
        )


class Cancelled(Exception):
    """The client was cancelled (the run is stopping); the request was not finished."""


@dataclass
class Response:
    """A complete response: status, headers (lower-case names), body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes
    url: str  # redacted

    def json(self):
        import json

        return json.loads(self.body.decode("utf-8"))


@dataclass
class RetryPolicy:
    """How often and how long to retry. ``delay(attempt)`` is exponential
    (``base_delay_s * 2**attempt``, capped at ``max_delay_s``) with "equal
    jitter" (uniform in [cap/2, cap]: threads that failed together spread out,
    and no retry is immediate); a server's Retry-After wins, capped at
    ``max_retry_after_s``."""

    max_retries: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_retry_after_s: float = 120.0

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.max_retry_after_s)
        cap = min(self.max_delay_s, self.base_delay_s * (2 ** attempt))
        return random.uniform(cap / 2, cap)  # "equal jitter": never a zero wait


class RateLimiter:
    """Spaces requests at most ``rate_per_s`` per second across all threads
    (``None`` or ``<= 0``: unlimited)."""

    def __init__(self, rate_per_s: float | None):
        self.interval_s = 1.0 / rate_per_s if rate_per_s and rate_per_s > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Reserve the next slot; returns how long the caller must wait (s)."""
        if not self.interval_s:
            return 0.0
        with self._lock:  # reserve a slot; the caller waits outside the lock
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval_s
        return slot - now


class Budget:
    """A thread-safe count of requests; ``limit=None`` means unlimited."""

    def __init__(self, limit: int | None = None):
        if limit is not None and limit < 0:
            raise ValueError(f"budget must be >= 0, got {limit}")
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()
        self._credit = threading.local()

    def take(self, n: int = 1) -> None:
        """Count ``n`` requests, spending this thread's prepaid credit first."""
        credit = getattr(self._credit, "n", 0)
        if credit:
            spent = min(credit, n)
            self._credit.n = credit - spent
            n -= spent
            if not n:
                return
        with self._lock:
            if self.limit is not None and self.used + n > self.limit:
                raise BudgetExhausted(self.limit)
            self.used += n

    def prepay(self, n: int) -> None:
        """Reserve ``n`` requests for this thread (all or nothing), so that a
        unit of work (a location's images) is not cut off halfway by the budget."""
        with self._lock:
            if self.limit is not None and self.used + n > self.limit:
                raise BudgetExhausted(self.limit)
            self.used += n
        self._credit.n = getattr(self._credit, "n", 0) + n

    def refund(self) -> None:
        """Give back this thread's unspent prepaid requests."""
        credit = getattr(self._credit, "n", 0)
        self._credit.n = 0
        if credit:
            with self._lock:
                self.used -= credit

    def remaining(self) -> float:
        with self._lock:
            return float("inf") if self.limit is None else self.limit - self.used


class _TransientError(Exception):
    """A failure worth retrying (timeout, reset, truncated body)."""


# ---------------------------------------------------------------- transports
class _UrllibTransport:
    """One connection per request via ``urllib.request`` (standard library)."""

    name = "urllib"

    def __init__(self, max_connections: int):
        # No proxies/redirect magic beyond urllib's defaults; HTTPError is a response.
        self._opener = urllib.request.build_opener()

    def get(self, url: str, headers: Mapping[str, str], timeout_s: float) -> tuple[int, dict, bytes]:
        request = urllib.request.Request(url, headers=dict(headers), method="GET")
        try:
            try:
                resp = self._opener.open(request, timeout=timeout_s)
            except urllib.error.HTTPError as err:  # 4xx/5xx still carry a body
                resp = err
            with resp:
                status = resp.status if hasattr(resp, "status") else resp.code
                heads = {k.lower(): v for k, v in resp.headers.items()}
                body = resp.read()
        except (socket.timeout, TimeoutError):
            raise _TransientError(f"timed out after {timeout_s:g} s") from None
        except http.client.HTTPException as exc:  # IncompleteRead, RemoteDisconnected, BadStatusLine
            raise _TransientError(f"incomplete response: {type(exc).__name__}") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (socket.timeout, TimeoutError)):
                raise _TransientError(f"timed out after {timeout_s:g} s") from None
            raise _TransientError(f"connection error: {type(exc.reason).__name__}") from None
        except OSError as exc:  # resets, refused
            raise _TransientError(f"connection error: {type(exc).__name__}") from None
        return status, heads, body


class _Urllib3Transport:
    """Keep-alive connection pools via ``urllib3`` (retries are ours, not urllib3's)."""

    name = "urllib3"

    def __init__(self, max_connections: int):
        self._pool = urllib3.PoolManager(num_pools=16, maxsize=max(1, max_connections), block=False, retries=False)

    def get(self, url: str, headers: Mapping[str, str], timeout_s: float) -> tuple[int, dict, bytes]:
        timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        try:
            resp = self._pool.request("GET", url, headers=dict(headers), timeout=timeout, preload_content=False,
                                      redirect=True, retries=False)
            try:
                body = resp.read()
            finally:
                resp.release_conn()
        except urllib3.exceptions.NewConnectionError:  # a subclass of ConnectTimeoutError, oddly
            raise _TransientError("connection error: cannot connect") from None
        except urllib3.exceptions.TimeoutError:
            raise _TransientError(f"timed out after {timeout_s:g} s") from None
        except urllib3.exceptions.HTTPError as exc:  # ProtocolError, IncompleteRead, NewConnectionError, ...
            raise _TransientError(f"connection error: {type(exc).__name__}") from None
        except OSError as exc:
            raise _TransientError(f"connection error: {type(exc).__name__}") from None
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, body


def _make_transport(kind: str, max_connections: int):
    if kind == "auto":
        kind = "urllib3" if urllib3 is not None else "urllib"
    if kind == "urllib3":
        if urllib3 is None:
            raise ValueError("transport 'urllib3' requested but urllib3 is not installed")
        return _Urllib3Transport(max_connections)
    if kind == "urllib":
        return _UrllibTransport(max_connections)
    raise ValueError(f"unknown transport {kind!r} (use 'auto', 'urllib3' or 'urllib')")


def _retry_after_s(value: str | None) -> float | None:
    """Parse Retry-After: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# ---------------------------------------------------------------- the client
@dataclass
class HttpClient:
    """Thread-safe GET with rate limiting, retries, budget and redaction.

    ``secrets`` are exact strings (keys, tokens) scrubbed from every message;
    ``user_agent`` identifies the tool to the API operator.
    """

    timeout_s: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    rate_per_s: float | None = None
    budget: Budget = field(default_factory=Budget)
    secrets: tuple[str, ...] = ()
    max_connections: int = 8
    transport: str = "auto"
    user_agent: str = "geospot-collector"
    log: Callable[[str], None] | None = None

    def __setattr__(self, name, value):
        if name == "secrets":  # sources add their key after construction
            value = tuple(value)
            register_secrets(*value)
        object.__setattr__(self, name, value)

    def __post_init__(self):
        self._limiter = RateLimiter(self.rate_per_s)
        self._transport = _make_transport(self.transport, self.max_connections)
        self._stats_lock = threading.Lock()
        self._cancelled = threading.Event()
        self.requests = 0  # sent, retries included
        self.retries = 0
        self.bytes = 0

    def cancel(self) -> None:
        """Stop: pending backoff waits end and no further request is sent."""
        self._cancelled.set()

    def redact(self, text: object) -> str:
        return redact(text, self.secrets)

    def excerpt(self, body: bytes, limit: int = 200) -> str:
        """A printable excerpt of a response body: redacted FIRST, then cut to `limit`
        characters (cutting first could leave most of an echoed key behind the cut)."""
        text = self.redact(body[:65536].decode("utf-8", "replace"))
        return text if len(text) <= limit else text[:limit] + "..."

    def _note(self, message: str) -> None:
        if self.log is not None:
            self.log(self.redact(message))

    def get(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        retry_if: Callable[[Response], str | None] | None = None,
    ) -> Response:
        """GET ``url`` and return the complete :class:`Response`.

        Retries 429/5xx/timeouts/connection errors/truncated bodies, and any
        response for which ``retry_if(response)`` returns a reason string
        (e.g. a JSON ``OVER_QUERY_LIMIT``). Other 4xx come back as a Response
        for the caller to interpret. Raises :class:`HttpError` once retries are
        spent and :class:`BudgetExhausted` when the budget forbids a request.
        """
        safe_url = self.redact(url)
        all_headers = {"User-Agent": self.user_agent, "Accept-Encoding": "identity"}
        all_headers.update(headers or {})
        attempt = 0
        while True:
            if self._cancelled.is_set():
                raise Cancelled()
            self.budget.take()
            wait_s = self._limiter.acquire()
            if wait_s > 0 and self._cancelled.wait(wait_s):
                raise Cancelled()
            with self._stats_lock:
                self.requests += 1
            retry_after = None
            response = None
            try:
                status, heads, body = self._transport.get(url, all_headers, self.timeout_s)
                with self._stats_lock:
                    self.bytes += len(body)
                response = Response(status, heads, body, safe_url)
                problem = self._problem(response)
                if problem is None and retry_if is not None:
                    problem = retry_if(response)
                retry_after = _retry_after_s(heads.get("retry-after"))
            except _TransientError as exc:
                problem = str(exc)
            if problem is None:
                return response
            if attempt >= self.retry.max_retries:
                status = response.status if response is not None else None
                body = self.excerpt(response.body, 300) if response is not None else ""
                raise HttpError(safe_url, self.redact(f"{problem} (gave up after {attempt + 1} attempts)"),
                                status, body) from None
            delay = self.retry.delay(attempt, retry_after)
            self._note(f"retrying {safe_url} in {delay:.2f} s: {problem}")
            with self._stats_lock:
                self.retries += 1
            if self._cancelled.wait(delay):  # a stop ends the backoff early
                raise Cancelled()
            attempt += 1

    @staticmethod
    def _problem(response: Response) -> str | None:
        """Why a transport-complete response must be retried, or None."""
        if response.status in RETRY_STATUSES:
            return f"HTTP {response.status}"
        declared = response.headers.get("content-length")
        encoded = response.headers.get("content-encoding", "identity").lower() not in ("", "identity")
        if declared and declared.isdigit() and not encoded and int(declared) != len(response.body):
            return f"truncated body ({len(response.body)} of {declared} bytes)"
        return None
