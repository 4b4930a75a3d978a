"""What the tests and the benchmarks share, imported as ``tests.support.<module>``.

- ``waits``: ``wait_until`` / ``wait_until_async``, the one bounded poll (a failing test never hangs);
- ``processes``: servers in their own process group on a free loopback port, started until they
  listen and stopped by PID (SIGTERM, then SIGKILL of the group), and a port nothing listens on;
- ``dag_runs``: real Airflow in-process (``dag.test()``): the ``airflow_db`` and ``run_dag``
  fixtures, ``make_dag``;
- ``airflow_stack``: real Airflow services (scheduler, triggerer, dag-processor, api-server,
  Celery workers) and the emulator as a separate process (tests/system, tests/deployment, benchmarks).
"""
