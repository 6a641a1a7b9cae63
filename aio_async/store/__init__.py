"""The store: the one door through which every caller reaches the queue's tables.

Every queue operation is written once, as a sequence of statements (``operations``, the text
in ``statements``), and run by a driver: ``drivers.django`` on one of Django's connections (the
caller's transaction), ``drivers.psycopg`` on the worker's own asyncio PostgreSQL connection.
The databases differ only in ``dialects``. The rest are the doors' rooms:

- ``protocol``: the ``Store`` the worker sees (a fake store fills it in tests);
- ``database``: that ``Store`` on a real database;
- ``scheduling``: new jobs, unique keys, what they run after, cancels and retries;
- ``maintenance``: pruning, periodic ticks, a queue's pause;
- ``results``: a job's end, for ``result()``;
- ``preflight``: what a worker checks before its first claim.

No module outside this package runs SQL or writes a job's status.
"""
