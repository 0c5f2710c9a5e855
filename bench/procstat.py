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
