"""CPU time and children of benchmarked processes, read from /proc (Linux)."""

import os
from pathlib import Path


def children(pid: int) -> list[int]:
    """The direct children of a process (all its threads')."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its living descendants (e.g. a gunicorn master and
    its workers, a Celery worker and its pool): on a shared machine, what other load disturbs least."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
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
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        totals[service] = total
    return totals
