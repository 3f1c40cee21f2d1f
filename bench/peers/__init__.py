"""Reference runners for other task queues (huey, procrastinate) on the workload of
``bench.work_throughput``. Each runner is a script printing one JSON line, so the
orchestrator can run it as a subprocess and kill its whole process group."""
