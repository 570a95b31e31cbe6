"""Tokens and keys (issue 11, points 3, 4, 5): absurd times, weak keys, revocation by user,
and one revocation list for ``serve`` and ``token revoke`` wherever they were started."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from typer.testing import CliRunner

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.cli.main import app
from tests.conftest import SECRET, ServerProcess, make_settings, server_env
from tests.server.hostile import start_server


async def handshake(server: ServerProcess, token: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            server.url.replace("ws", "http", 1), headers={"Authorization": f"Bearer {token}"}
        ) as r,
    ):
        return r.status, await r.json()


def signed(**claims: Any) -> str:
    now = int(time.time())
    return jwt.encode({"sub": "alice", "iat": now, "exp": now + 60, **claims}, SECRET, "HS256")


async def test_absurd_time_claims_are_refused_at_the_handshake(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    absurd = [
        {"exp": 300_000_000_000},  # beyond 9999
        {"exp": 1e300},
        {"exp": -5},
        {"exp": "tomorrow"},
        {"iat": 10**30},
        {"iat": -1},
        {"nbf": -1},
        {"nbf": 9e99},
        {"exp": True},
    ]
    for claims in absurd:
        status, body = await handshake(server, signed(**claims))
        assert (status, body["error"]) == (401, "invalid_token"), claims
    assert "Traceback" not in server.output()
    readyz = server.url.replace("ws", "http", 1).removesuffix("ws") + "readyz"
    async with aiohttp.ClientSession() as http, http.get(readyz) as r:
        assert (await r.json())["connections"] == 0  # no ghost left registered


async def test_a_signed_sub_or_jti_with_a_lone_surrogate_is_an_invalid_token(
    tmp_path: Path,
) -> None:
    """Signed, so it passes the signature; its "\\ud800" cannot go into the ``connected``
    frame, the store or a log line (it was 101 then 1011, or a 500 on the Redis store)."""
    server = start_server(tmp_path)
    for claims in ({"sub": "al\ud800ice"}, {"jti": "\udfff"}):
        status, body = await handshake(server, signed(**claims))
        assert (status, body["error"]) == (401, "invalid_token"), claims
        assert "not valid text" in body["detail"]
    assert (await handshake(server, signed(sub="al\U0001f600ice")))[0] == 400  # no upgrade asked
    assert "Traceback" not in server.output()


def test_token_issue_refuses_a_ttl_above_a_year_and_a_day(tmp_path: Path) -> None:
    env = {"WEBSOCKET_SECRET_KEY": SECRET}
    runner = CliRunner()
    refused = runner.invoke(app, ["token", "issue", "--sub", "a", "--ttl", "300000000000"], env=env)
    assert refused.exit_code != 0 and "at most 366d" in refused.output
    ok = runner.invoke(app, ["token", "issue", "--sub", "a", "--ttl", "366d"], env=env)
    assert ok.exit_code == 0, ok.output


def serve_fails(tmp_path: Path, **env: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "qa_ws_cli", "serve", "--port", "0"],
        env={**server_env(tmp_path), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0, proc.stderr
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
def test_every_hmac_algorithm_needs_a_32_byte_secret(tmp_path: Path, algorithm: str) -> None:
    pem = tmp_path / "pub.pem"
    pem.write_text("-----BEGIN PUBLIC KEY-----\n")
    out = serve_fails(
        tmp_path,
        WEBSOCKET_SECRET_KEY="x",
        WEBSOCKET_SECURITY__AUTHENTICATION__ALGORITHM=algorithm,
        WEBSOCKET_SECURITY__AUTHENTICATION__PUBLIC_KEY_FILE=str(pem),
    )
    assert "shorter than 32 bytes" in out


def test_an_asymmetric_algorithm_needs_a_readable_key_file(tmp_path: Path) -> None:
    out = serve_fails(tmp_path, WEBSOCKET_SECURITY__AUTHENTICATION__ALGORITHM="RS256")
    assert "needs security.authentication.public_key_file" in out
    out = serve_fails(
        tmp_path,
        WEBSOCKET_SECURITY__AUTHENTICATION__ALGORITHM="ES256",
        WEBSOCKET_SECURITY__AUTHENTICATION__PUBLIC_KEY_FILE=str(tmp_path / "missing.pem"),
    )
    assert "cannot read the public key file" in out


def cli(tmp_path: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = server_env(tmp_path)
    full.pop("WEBSOCKET_SECURITY__AUTHENTICATION__REVOCATION_FILE", None)
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "qa_ws_cli", *args],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_revoke_by_sub_refuses_older_tokens_of_that_user_only(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    settings = make_settings(tmp_path)
    no_jti = jwt.encode(
        {"sub": "alice", "iat": int(time.time()), "exp": int(time.time()) + 600}, SECRET, "HS256"
    )
    old = issue_token(settings, "alice")[0]
    bob = issue_token(settings, "bob")[0]
    env = {"WEBSOCKET_SECURITY__AUTHENTICATION__REVOCATION_FILE": str(tmp_path / "revoked.jsonl")}
    done = cli(tmp_path, tmp_path, "token", "revoke", "--sub", "alice", **env)
    assert done.returncode == 0, done.stderr
    for token in (no_jti, old):
        status, body = await handshake(server, token)
        assert (status, body["error"]) == (401, "token_revoked")
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.url, headers={"Authorization": f"Bearer {bob}"}) as ws:
            assert (await ws.receive_json(timeout=10))["user"] == "bob"
        await asyncio.sleep(1.1)  # a token issued after the revocation (iat is in seconds)
        fresh = issue_token(settings, "alice")[0]
        async with http.ws_connect(server.url, headers={"Authorization": f"Bearer {fresh}"}) as ws:
            assert (await ws.receive_json(timeout=10))["user"] == "alice"


def test_revocation_list_is_shared_whatever_the_working_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    token = issue_token(make_settings(tmp_path), "alice")[0]
    done = cli(tmp_path, here, "token", "revoke", token, XDG_STATE_HOME=str(state))
    assert done.returncode == 0, done.stderr
    assert (state / "qa-ws" / "revoked.jsonl").is_file()
    checked = cli(tmp_path, there, "token", "verify", token, XDG_STATE_HOME=str(state))
    assert checked.returncode != 0 and "revoked" in checked.stdout + checked.stderr
    # a relative path in a config file is relative to that file, not to where one stands
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "qa.yaml").write_text(
        "websocket:\n  security:\n    authentication:\n      revocation_file: lists/rev.jsonl\n"
    )
    done = cli(tmp_path, here, "token", "revoke", "--sub", "bob", "--config", str(conf / "qa.yaml"))
    assert done.returncode == 0, done.stderr
    assert (conf / "lists" / "rev.jsonl").is_file()
    assert not (here / "lists").exists()
