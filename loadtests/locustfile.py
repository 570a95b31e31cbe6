"""qa-ws load scenarios for plain Locust: the web UI, ``--processes``, master and workers.

``qa-ws bench`` runs the same users headless and gates CI on them; this file is for
everything else Locust offers. The users live in ``qa_ws_cli.bench.users``; this file
only picks the scenario and wires the raw-sample recorder (``qa_ws_cli.bench.hooks``), so
the figures and gates printed at the end are computed from every process's raw samples.

    locust -f loadtests/locustfile.py --host ws://127.0.0.1:8765/ws            # web UI :8089
    locust -f loadtests/locustfile.py --headless -u 150 -r 50 -t 60s --host ws://127.0.0.1:8765/ws
    locust -f loadtests/locustfile.py --processes 4 --headless -u 2000 -r 200 -t 2m --host ...
    # several machines: one master, workers anywhere that can reach it and the gateway
    locust -f loadtests/locustfile.py --master --expect-workers 3 --headless -u 3000 -r 300 -t 5m \
        --host ws://gateway.internal:8765/ws
    locust -f loadtests/locustfile.py --worker --master-host 10.0.0.5          # on each machine

Environment variables (the same on master and workers):

    QA_WS_URL              the target when --host is not given
    QA_WS_SCENARIO         chat (default), idle, burst, churn, reconnect, or all (every
                           class; pick in the web UI or name classes on the command line)
    QA_WS_TOKEN            one JWT for every user; without it, when
    WEBSOCKET_SECRET_KEY   (the server's signing key) is set, each user gets its own token
                           with a distinct sub; QA_WS_CONFIG names a qa-ws YAML config for
                           issuer, audience and algorithm (default configs/default.yaml)
    QA_WS_ALLOW_REMOTE     1 to allow a target that is not loopback (only servers you run)
    QA_WS_THINK_TIME       mean seconds between a user's actions (default per scenario:
                           chat 1, idle 5, burst 2, churn 0.5)
    QA_WS_ANSWER_TIMEOUT   seconds to wait for an answer (10); QA_WS_CONNECT_TIMEOUT (10)
    QA_WS_BURST_SIZE       messages per burst (10); QA_WS_MESSAGE the question asked
    QA_WS_MAX_P95_MS       gate, default 500; QA_WS_MAX_ERROR_RATE gate, default 0;
    QA_WS_MIN_CONNECTIONS  gate, default all users (none for churn). The gates are printed
                           when Locust quits and set its exit code: 0 all pass, 1 one fails.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import uuid
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner

from qa_ws_cli.bench.hooks import install, listen, report_on_quit
from qa_ws_cli.bench.scenarios import SCENARIO_USERS
from qa_ws_cli.bench.spec import LoadOptions, check_url
from qa_ws_cli.bench.tokens import TokenSource
from qa_ws_cli.bench.users import QaWsUser

SCENARIO = os.environ.get("QA_WS_SCENARIO", "chat").strip().lower() or "chat"
if SCENARIO != "all" and SCENARIO not in SCENARIO_USERS:
    sys.exit(f"QA_WS_SCENARIO must be one of {', '.join(SCENARIO_USERS)} or all, not {SCENARIO!r}")


def _export(scenario: str) -> dict[str, type[QaWsUser]]:
    """Locust runs every User class in this module's namespace: only the chosen ones."""
    chosen = list(SCENARIO_USERS.values()) if scenario == "all" else [SCENARIO_USERS[scenario]]
    for user_class in chosen:
        if os.environ.get("QA_WS_URL"):
            user_class.host = os.environ["QA_WS_URL"]
    return {user_class.__name__: user_class for user_class in chosen}


globals().update(_export(SCENARIO))


def _allowed(url: str | None) -> bool:
    if not url:
        return True  # nothing to check yet (the web UI asks for it)
    try:
        check_url(url, allow_remote=os.environ.get("QA_WS_ALLOW_REMOTE") == "1")
    except ValueError as exc:
        logging.getLogger("qa_ws.bench").error("%s (set QA_WS_ALLOW_REMOTE=1 to allow it)", exc)
        return False
    return True


def _on_init(environment: Environment, **_: Any) -> None:
    if not _allowed(environment.host or os.environ.get("QA_WS_URL")):
        sys.exit(2)
    options = dataclasses.replace(LoadOptions.from_env(os.environ), run_id=uuid.uuid4().hex[:8])
    tokens = TokenSource.from_env(
        os.environ, config_file=os.environ.get("QA_WS_CONFIG"), ttl_s=24 * 3600.0
    )
    install(environment, options, tokens)


def _on_test_start(environment: Environment, **_: Any) -> None:
    if not _allowed(environment.host) and environment.runner is not None:
        gevent.spawn(environment.runner.quit)  # not from inside the greenlet that starts users


def _on_quitting(environment: Environment, **_: Any) -> None:
    if not isinstance(environment.runner, WorkerRunner):
        report_on_quit(environment, "chat" if SCENARIO == "all" else SCENARIO)


listen(events.init, _on_init)
listen(events.test_start, _on_test_start)
listen(events.quitting, _on_quitting)
