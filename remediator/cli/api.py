"""The daemon's HTTP API as the operator commands see it, given ``--url``.

Standard library only (urllib, ssl): the CLI needs no event loop to ask a question.

What keeps the credential safe:

* it comes from ``--token-file`` or the environment, never from a flag (argv is in
  ``ps`` and in shell history), and it is never printed: every message this module
  produces has it masked, even text a server echoed back;
* it is sent only to the ``--url`` address: redirects are refused, since urllib would
  forward the ``Authorization`` header to wherever a redirect points;
* ``https://`` verifies the server (the system CAs, or ``--ca-file``); ``http://`` to
  anything but loopback is refused unless ``--plain-http`` says so, because the token
  would cross the network in clear.
"""

from __future__ import annotations

import argparse
import http.client
import re
import ssl
import textwrap
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import orjson

import remediator
from remediator.cli.common import EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE, CliError
from remediator.settings import is_loopback

__all__ = ["ApiClient", "ApiOptions", "Credential", "add_api_flags", "api_options"]

URL_ENV = "REMEDIATOR_URL"
TOKEN_ENV = "REMEDIATOR_TOKEN"  # noqa: S105 - the variable's name, not a token
TOKEN_FILE_ENV = "REMEDIATOR_TOKEN_FILE"  # noqa: S105
CA_FILE_ENV = "REMEDIATOR_CA_FILE"
CLIENT_CERT_ENV = "REMEDIATOR_CLIENT_CERT"
CLIENT_KEY_ENV = "REMEDIATOR_CLIENT_KEY"
DEFAULT_TIMEOUT_SECONDS = 30.0
MAX_TIMEOUT_SECONDS = 3600.0
# Far above any page the server sends (it pages by bytes); a bound, not a limit in use.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
_MESSAGE_CHARS = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_TOKEN_CHARACTERS = re.compile(r"[\x21-\x7e]+")  # visible ASCII, as a header value needs


class Credential:
    """A bearer token; its repr and every message it touches show ``***`` instead."""

    __slots__ = ("_token",)

    def __init__(self, token: str) -> None:
        self._token = token

    def authorization(self) -> str:
        return f"Bearer {self._token}"

    def mask(self, text: str) -> str:
        return text.replace(self._token, "***")

    def __repr__(self) -> str:
        return "Credential(***)"


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiOptions:
    url: str  # scheme://host[:port][/prefix], no trailing slash
    credential: Credential | None
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS


def add_api_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "over the daemon's API (instead of the local journal file)",
        textwrap.fill(
            f"The credential comes from --token-file, ${TOKEN_FILE_ENV} or ${TOKEN_ENV}: "
            "never from a flag, which would show in `ps` and in shell history.",
            width=88,
        ),
    )
    group.add_argument(
        "--url",
        metavar="URL",
        help=f"The daemon, e.g. https://remediator.example:9095 (${URL_ENV}).",
    )
    group.add_argument(
        "--token-file", type=Path, metavar="PATH", help="File holding the bearer token."
    )
    group.add_argument("--token", action=_RefuseToken, help=argparse.SUPPRESS)
    group.add_argument(
        "--ca-file",
        type=Path,
        metavar="PATH",
        help=f"CA bundle to verify the daemon's certificate (${CA_FILE_ENV}; default: the "
        "system's CAs).",
    )
    group.add_argument(
        "--client-cert",
        type=Path,
        metavar="PATH",
        help=f"Client certificate (PEM) for a listener that asks for one (${CLIENT_CERT_ENV}).",
    )
    group.add_argument(
        "--client-key",
        type=Path,
        metavar="PATH",
        help=f"Its private key, if not in the certificate file (${CLIENT_KEY_ENV}).",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"Per request (default {DEFAULT_TIMEOUT_SECONDS:g}).",
    )
    group.add_argument(
        "--plain-http",
        action="store_true",
        help="Allow an http:// URL that is not loopback: the token crosses the network in "
        "clear. Only for a network you trust end to end.",
    )


class _RefuseToken(argparse.Action):
    """``--token`` exists only to refuse it without echoing the value back."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            "--token is not accepted: a token on the command line shows in `ps` and in shell "
            f"history. Put it in a file (--token-file PATH, ${TOKEN_FILE_ENV}) or in "
            f"${TOKEN_ENV}"
        )


def api_options(args: argparse.Namespace, environ: Mapping[str, str]) -> ApiOptions | None:
    """The API to talk to, or None for the local journal file.

    ``--url`` wins; ``$REMEDIATOR_URL`` applies unless ``--journal``/``--config`` ask for
    the local journal on the command line (flags beat the environment).
    """
    local_flags = [f for f in ("journal", "config") if getattr(args, f, None)]
    url_text = args.url
    if url_text and local_flags:
        raise CliError(
            f"--url talks to the daemon's API, --{local_flags[0]} reads the local journal: "
            "give one of them",
            code=EXIT_USAGE,
        )
    if not url_text and not local_flags:
        url_text = environ.get(URL_ENV) or None
    if not url_text:
        return None
    url = _checked_url(url_text, plain_http=args.plain_http)
    tls = {
        "ca_file": args.ca_file or _env_path(environ, CA_FILE_ENV),
        "client_cert": args.client_cert or _env_path(environ, CLIENT_CERT_ENV),
        "client_key": args.client_key or _env_path(environ, CLIENT_KEY_ENV),
    }
    given = [name for name, path in tls.items() if path is not None]
    if given and not url.startswith("https://"):
        flag = "--" + given[0].replace("_", "-")
        raise CliError(f"{flag} needs an https:// --url", code=EXIT_USAGE)
    if tls["client_key"] is not None and tls["client_cert"] is None:
        raise CliError("--client-key needs --client-cert", code=EXIT_USAGE)
    if not 0 < args.timeout <= MAX_TIMEOUT_SECONDS:
        raise CliError(
            f"--timeout must be above 0 and at most {MAX_TIMEOUT_SECONDS:g}, got {args.timeout:g}",
            code=EXIT_USAGE,
        )
    return ApiOptions(
        url=url,
        credential=read_credential(args.token_file, environ),
        timeout_seconds=args.timeout,
        **tls,
    )


def _env_path(environ: Mapping[str, str], name: str) -> Path | None:
    value = environ.get(name)
    return Path(value) if value else None


def _checked_url(text: str, *, plain_http: bool) -> str:
    try:
        parts = urllib.parse.urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError as exc:
        raise CliError(f"--url: not a URL ({exc})", code=EXIT_USAGE) from None
    if parts.scheme not in ("http", "https") or not host:
        raise CliError(
            "--url: expected http(s)://HOST[:PORT][/PREFIX], e.g. https://remediator.example:9095",
            code=EXIT_USAGE,
        )
    if parts.username is not None or parts.password is not None:
        # Never echoed: the userinfo is the secret.
        raise CliError(
            "--url: holds credentials, which would show in `ps` and shell history; "
            "use --token-file or $REMEDIATOR_TOKEN",
            code=EXIT_USAGE,
        )
    if parts.query or parts.fragment:
        raise CliError("--url: no query or fragment, only the daemon's address", code=EXIT_USAGE)
    if parts.scheme == "http" and not is_loopback(host) and not plain_http:
        raise CliError(
            f"--url {text}: plain http to a host that is not loopback would send the token "
            "in clear; use https:// (or --plain-http on a network you trust end to end)",
            code=EXIT_USAGE,
        )
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def read_credential(token_file: Path | None, environ: Mapping[str, str]) -> Credential | None:
    """The token from ``--token-file``, ``$REMEDIATOR_TOKEN_FILE`` or ``$REMEDIATOR_TOKEN``.

    Errors name where the token came from, never any part of it.
    """
    path = token_file or _env_path(environ, TOKEN_FILE_ENV)
    if path is not None:
        where = f"--token-file {path}" if token_file else f"${TOKEN_FILE_ENV} ({path})"
        try:
            text = path.expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"{where}: cannot read it ({exc.strerror})", code=EXIT_USAGE) from None
        except UnicodeDecodeError:
            raise CliError(f"{where}: not UTF-8 text", code=EXIT_USAGE) from None
    else:
        where, text = f"${TOKEN_ENV}", environ.get(TOKEN_ENV, "")
        if not text:
            return None
    token = text.strip()  # files usually end with a newline
    if not token:
        raise CliError(f"{where}: empty", code=EXIT_USAGE)
    if _TOKEN_CHARACTERS.fullmatch(token) is None:
        raise CliError(
            f"{where}: the token must be one word of visible ASCII characters "
            "(no spaces, line breaks or control characters)",
            code=EXIT_USAGE,
        )
    return Credential(token)


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as the 3xx it is: the credential stays with --url's host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Message
    body: bytes


class ApiClient:
    """Requests to the daemon's ``/api/v1``; every failure a :class:`CliError`."""

    def __init__(self, options: ApiOptions) -> None:
        self._options = options
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=self._tls_context()), _RefuseRedirects()
        )

    def __repr__(self) -> str:
        return f"ApiClient({self._options.url})"

    @property
    def url(self) -> str:
        return self._options.url

    def get_json(self, path: str, query: Mapping[str, str | int | None] | None = None) -> Any:
        return self._json(self._request("GET", path, query=query))

    def get_text(self, path: str, query: Mapping[str, str | int | None] | None = None) -> str:
        answer = self._request("GET", path, query=query, accept="*/*")
        return answer.body.decode("utf-8", "replace")

    def post_json(
        self, path: str, body: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
    ) -> Any:
        return self._json(self._request("POST", path, body=body, headers=headers))

    def patch_json(self, path: str, body: Mapping[str, Any]) -> Any:
        return self._json(self._request("PATCH", path, body=body))

    # -- transport -------------------------------------------------------------------
    def _tls_context(self) -> ssl.SSLContext | None:
        o = self._options
        if not o.url.startswith("https://"):
            return None
        try:
            context = ssl.create_default_context(cafile=str(o.ca_file) if o.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise CliError(
                f"--ca-file {o.ca_file}: cannot load it ({_why(exc)})", code=EXIT_USAGE
            ) from None
        if o.client_cert is not None:
            try:
                context.load_cert_chain(o.client_cert, o.client_key)
            except (OSError, ssl.SSLError) as exc:
                raise CliError(
                    f"--client-cert {o.client_cert}"
                    + (f" / --client-key {o.client_key}" if o.client_key else "")
                    + f": cannot load them ({_why(exc)})",
                    code=EXIT_USAGE,
                ) from None
        return context

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | None] | None = None,
        body: Mapping[str, Any] | None = None,
        accept: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        kept = {k: str(v) for k, v in (query or {}).items() if v is not None}
        url = self._options.url + path + (f"?{urllib.parse.urlencode(kept)}" if kept else "")
        request = urllib.request.Request(url, method=method)  # noqa: S310 - scheme checked
        request.add_header("Accept", accept)
        request.add_header("User-Agent", f"remediator-cli/{remediator.__version__}")
        if self._options.credential is not None:
            request.add_header("Authorization", self._options.credential.authorization())
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        if body is not None:
            request.data = orjson.dumps(body)
            request.add_header("Content-Type", "application/json")
        answer = self._exchange(request)
        if 200 <= answer.status < 300:
            return answer
        raise self._refusal(answer, what=f"{method} {path}")

    def _exchange(self, request: urllib.request.Request) -> Answer:
        where = self._options.url
        try:
            with self._opener.open(request, timeout=self._options.timeout_seconds) as response:
                return Answer(response.status, response.headers, _read(response))
        except urllib.error.HTTPError as err:
            with err:
                return Answer(err.code, err.headers, _read(err))
        except urllib.error.URLError as exc:
            raise self._unreached(exc.reason, where) from None
        except ssl.SSLError as exc:
            raise self._unreached(exc, where) from None
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise self._unreached(exc, where) from None

    def _unreached(self, reason: object, where: str) -> CliError:
        if isinstance(reason, ssl.SSLCertVerificationError):
            return self._error(
                f"TLS: cannot verify the certificate of {where} ({reason.verify_message}); "
                "give its CA with --ca-file",
                EXIT_USAGE,
            )
        if isinstance(reason, ssl.SSLError):
            return self._error(
                f"TLS handshake with {where} failed ({_why(reason)}); does it want a client "
                "certificate (--client-cert) or plain http?",
                EXIT_USAGE,
            )
        if isinstance(reason, TimeoutError):
            return self._error(
                f"{where} did not answer within {self._options.timeout_seconds:g}s",
                EXIT_UNAVAILABLE,
            )
        return self._error(f"cannot reach {where}: {_why(reason)}", EXIT_UNAVAILABLE)

    def _refusal(self, answer: Answer, *, what: str) -> CliError:
        status, message = answer.status, _server_message(answer)
        retry = _retry_after(answer.headers)
        if status == 401:
            hint = (
                "the credential given was refused"
                if self._options.credential is not None
                else f"no credential was given (--token-file, ${TOKEN_FILE_ENV} or ${TOKEN_ENV})"
            )
            return self._error(f"unauthorized: {message}; {hint}", EXIT_USAGE)
        if status == 403:
            # The daemon's own message already starts "forbidden: role 'operate' required".
            return self._error(
                message if message.startswith("forbidden") else f"forbidden: {message}",
                EXIT_USAGE,
            )
        if status in (404, 409):  # no such thing, or not in that state: an answer
            return self._error(message, EXIT_FAILED)
        if status == 429:
            return self._error(f"too many requests: {message}{retry}", EXIT_USAGE)
        if 300 <= status < 400:
            location = _one_line(answer.headers.get("Location") or "?")[:200]
            return self._error(
                f"{what}: redirected ({status}) to {location}; the credential is only sent to "
                "--url itself: give the final address as --url",
                EXIT_USAGE,
            )
        if status == 503:
            return self._error(f"daemon unavailable: {message}{retry}", EXIT_UNAVAILABLE)
        if status >= 500:
            return self._error(f"daemon error {status}: {message}", EXIT_UNAVAILABLE)
        return self._error(f"{what}: {status}: {message}", EXIT_USAGE)

    def _error(self, message: str, code: int) -> CliError:
        credential = self._options.credential
        text = credential.mask(message) if credential is not None else message
        return CliError(text, code=code)

    def _json(self, answer: Answer) -> Any:
        try:
            return orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            raise self._error(
                f"{self._options.url} answered {answer.status} with something that is not JSON: "
                "is --url the remediator daemon?",
                EXIT_UNAVAILABLE,
            ) from None


def _read(response: Any) -> bytes:
    body: bytes = response.read(MAX_ANSWER_BYTES + 1)
    if len(body) > MAX_ANSWER_BYTES:
        raise CliError(
            f"answer larger than {MAX_ANSWER_BYTES} bytes; ask for less (--limit)",
            code=EXIT_UNAVAILABLE,
        )
    return body


def _server_message(answer: Answer) -> str:
    """The ``error`` field of a JSON answer, on one bounded line."""
    message: object = None
    try:
        document = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict):
        message = document.get("error")
    if not isinstance(message, str) or not message.strip():
        message = f"HTTP {answer.status}"
    return _one_line(message)


def _one_line(text: str) -> str:
    line = _CONTROL.sub(" ", text).strip()
    return line if len(line) <= _MESSAGE_CHARS else line[: _MESSAGE_CHARS - 1] + "…"


def _retry_after(headers: Message) -> str:
    value = (headers.get("Retry-After") or "").strip()
    return f" (retry after {_one_line(value)[:40]}s)" if value.isdigit() else ""


def _why(exc: object) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return _one_line(str(exc)) or type(exc).__name__
