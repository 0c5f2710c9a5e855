"""CPU time and children of benchmarked processes, read from /proc (Linux)."""

import os
from pathlib import Path


def children(pid: int) -> list[int]:
    """The direct children of a process (all its threads')."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def own_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (its threads included, not its children).
    Raises FileNotFoundError / ProcessLookupError once it has gone."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its living descendants (e.g. a gunicorn master and
    its workers, a Celery worker and its pool): on a shared machine, what other load disturbs least."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            total += own_cpu_seconds(current)
            todo += children(current)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def pids_named(*names: str) -> list[int]:
    """Processes whose command name is one of `names` (e.g. every PostgreSQL backend, redis-server)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in names:
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
    return found


def service_cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by the local PostgreSQL and Redis servers (all their processes)."""
    totals: dict[str, float] = {}
    for service, names in (("postgres", ("postgres",)), ("redis", ("redis-server",))):
        total = 0.0
        for pid in pids_named(*names):
            try:
                total += own_cpu_seconds(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
        totals[service] = total
    return totals
