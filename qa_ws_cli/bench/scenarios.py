"""Which Locust user class each ``--scenario`` runs.

Imports Locust (and so gevent's monkey-patching): load processes only.
"""

from __future__ import annotations

from qa_ws_cli.bench.reconnect import ReconnectUser
from qa_ws_cli.bench.users import BurstUser, ChatUser, ChurnUser, IdleUser, QaWsUser

SCENARIO_USERS: dict[str, type[QaWsUser]] = {
    "chat": ChatUser,
    "idle": IdleUser,
    "burst": BurstUser,
    "churn": ChurnUser,
    "reconnect": ReconnectUser,
}
