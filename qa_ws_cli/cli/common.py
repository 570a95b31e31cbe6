"""What every command shares: options that load Settings, and one-line failures."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.client.handshake import ClientOptions, check_url
from qa_ws_cli.client.output import EXIT_PIPE, OutputClosed, OutputFailed, silence_stdout
from qa_ws_cli.client.plain import explain
from qa_ws_cli.client.text import InvalidText, token_problem
from qa_ws_cli.config import (
    DEFAULT_CONFIG,
    LoadedSettings,
    Settings,
    load_settings,
    with_dev_secret,
)
from qa_ws_cli.errors import (
    ClientTimeout,
    ConfigError,
    ConnectionLost,
    HandshakeRefused,
    QaWsError,
    ServerError,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML config file (default: configs/default.yaml if present).",
        exists=True,
        dir_okay=False,
        readable=True,
    ),
]

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", "-u", envvar="QA_WS_URL", help="Server URL (env QA_WS_URL; default: the config)."
    ),
]


def checked_token(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """Every --token (and QA_WS_TOKEN): printable ASCII, or a usage error that names the bad
    character and where it is, never the token (a trailing CR from a paste, say)."""
    problem = token_problem(value) if value else None
    if problem is not None:
        source = ctx.get_parameter_source(param.name or "")
        from_env = source is not None and source.name == "ENVIRONMENT"
        given = param.envvar if from_env and isinstance(param.envvar, str) else param.opts[0]
        fail(f"{given}: the token {problem}", EXIT_USAGE)
    return value


TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        "-t",
        envvar="QA_WS_TOKEN",
        help="JWT to present (env QA_WS_TOKEN).",
        callback=checked_token,
    ),
]

CarrierOption = Annotated[
    str, typer.Option("--carrier", help="How to present the token: header, subprotocol, query.")
]

# exit codes shared by the client commands (documented in the README)
EXIT_FAILED = 1
EXIT_USAGE = 2  # a bad option value, as click's own usage errors
EXIT_REFUSED = 3
EXIT_LOST = 4
EXIT_SERVER_ERROR = 5
EXIT_TIMEOUT = 6

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False, soft_wrap=True)

T = TypeVar("T")


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True)
    raise typer.Exit(code)


def settings_from(
    config: Path | None, overrides: dict[str, Any] | None = None, *, dev_secret: bool = False
) -> LoadedSettings:
    """The layered settings; ``dev_secret``: fall back on the secret ``serve --dev`` keeps."""
    try:
        return load_settings(config, _prune(overrides or {}), dev_secret=dev_secret)
    except ConfigError as exc:
        fail(exc.message)
    except UnicodeDecodeError as exc:
        fail(not_utf8(config or DEFAULT_CONFIG, exc))


def not_utf8(path: Path | str, exc: UnicodeDecodeError) -> str:
    """A config file that is not UTF-8 text, as one line (yaml cannot read it)."""
    byte = exc.object[exc.start] if exc.start < len(exc.object) else 0
    return (
        f"cannot read config file {path}: it is not UTF-8 text (the byte 0x{byte:02x} "
        f"at offset {exc.start}); save it as UTF-8"
    )


SIGNING_HINT = ", or run `qa-ws serve --dev` (it keeps a development secret for these commands)"


def signing_settings(settings: Settings) -> Settings:
    """Settings to mint tokens with: the configured secret, else the one ``serve --dev`` keeps."""
    try:
        return with_dev_secret(settings)
    except ConfigError as exc:
        fail(exc.message)


def _prune(tree: dict[str, Any]) -> dict[str, Any]:
    """Flags left at None mean "not given": they must not override lower layers."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            value = _prune(value)
            if value:
                out[key] = value
        elif value is not None:
            out[key] = value
    return out


def default_url(settings: Settings) -> str:
    scheme = "wss" if settings.server.ssl.certfile else "ws"
    host = settings.server.host
    host = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    return f"{scheme}://{host}:{settings.server.port}/ws"


def resolve_token(settings: Settings, token: str | None, sub: str | None) -> str | None:
    if token:
        return token
    if sub:
        signing = signing_settings(settings)
        try:
            return issue_token(signing, sub, ttl_s=3600)[0]
        except QaWsError as exc:
            hint = SIGNING_HINT if signing.secret() is None else ""
            fail(f"--sub needs the signing key: {exc.message}{hint}")
    return None


def client_options(
    settings: Settings,
    *,
    url: str | None,
    token: str | None,
    sub: str | None,
    carrier: str,
    **options: Any,
) -> ClientOptions:
    """Options for the client commands; with ``--sub`` it mints a fresh token per reconnect."""
    if carrier not in ("header", "subprotocol", "query"):
        fail("--carrier must be header, subprotocol or query", EXIT_USAGE)
    url = url or default_url(settings)
    problem = check_url(url)
    if problem:
        fail(f"--url {problem}", EXIT_USAGE)
    signer: Callable[[], str] | None = None
    if sub and not token:
        signing, user = signing_settings(settings), sub

        def mint() -> str:
            return issue_token(signing, user, ttl_s=3600)[0]

        signer = mint
    return ClientOptions(
        url=url,
        token=resolve_token(settings, token, sub),
        carrier=carrier,  # type: ignore[arg-type]  # checked above
        token_factory=signer,
        **options,
    )


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, OutputClosed):
        return EXIT_PIPE
    if isinstance(exc, InvalidText):
        return EXIT_USAGE
    if isinstance(exc, HandshakeRefused):
        return EXIT_REFUSED
    if isinstance(exc, ConnectionLost):
        return EXIT_LOST
    if isinstance(exc, ServerError):
        return EXIT_SERVER_ERROR
    if isinstance(exc, ClientTimeout):
        return EXIT_TIMEOUT
    return EXIT_FAILED


@contextmanager
def failures(options: ClientOptions | None = None) -> Iterator[None]:
    """Turn the error tree into one line on stderr and an exit code; never a traceback.

    A closed stdout (``| head``) ends the command quietly with the shell's status for it.
    ``options``: the client's, so a refused token minted here (``--sub``) gets the right hint.
    """
    minted = options is not None and options.token_factory is not None
    try:
        yield
    except OutputClosed:
        silence_stdout()
        raise typer.Exit(EXIT_PIPE) from None
    except OutputFailed as exc:  # `> /dev/full`: one line, not a wait for the timeout
        silence_stdout()
        fail(exc.message, EXIT_FAILED)
    except QaWsError as exc:
        fail(explain(exc, minted=minted), exit_code_for(exc))
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130) from None


def read_stdin_value(value: str) -> str:
    if value == "-":
        return sys.stdin.read().strip()
    return value


def run_async(factory: Callable[[], Any]) -> Any:
    import asyncio

    return asyncio.run(factory())
