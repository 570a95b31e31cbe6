"""``python -m qa_ws_cli`` works like ``qa-ws``."""

from qa_ws_cli.cli.main import main

main()
