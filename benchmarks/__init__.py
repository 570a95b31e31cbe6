"""Side-by-side performance harness for qa-ws (``make perf``); not part of the package.

``servers`` holds the references (a bare aiohttp endpoint, a python-socketio peer), ``agents``
the streaming agent qa-ws loads for the relay measurement, ``loadgen`` the picows load
generator (its own process), ``procs`` starts and measures server processes, ``perf`` runs
every server in alternating rounds and prints the table, ``budget`` the CPU budget by stage.
"""
