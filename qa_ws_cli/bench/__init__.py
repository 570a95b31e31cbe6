"""Load tests of the gateway: Locust users, a headless runner, raw-sample gates and reports.

Two halves that must not meet in one process. The parent side (``spec``, ``samples``,
``gates``, ``reports``, ``launch``) is plain Python that the CLI imports. The load side
(``users``, ``hooks``, ``runner``) imports Locust, whose gevent monkey-patching rewrites
``socket``, ``ssl`` and ``threading`` for the whole interpreter; it runs only in a child
process (``python -m qa_ws_cli.bench.runner``) or under ``locust -f loadtests/locustfile.py``.
So nothing in this ``__init__`` imports either half.
"""
