"""Start work on many threads at once (a barrier releases them together) and collect what each got."""

import threading
from collections.abc import Callable
from typing import Any

from django.db import connection


def run_together(threads: int, work: Callable[[int], Any]) -> list[Any]:
    """`work(i)` on `threads` threads released at the same moment: each one's return value, or the
    exception it raised. Each thread closes its own database connection when done."""
    barrier = threading.Barrier(threads)
    outcomes: list[Any] = [None] * threads

    def one(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = work(index)
        except Exception as exc:
            outcomes[index] = exc
        finally:
            connection.close()

    pool = [threading.Thread(target=one, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return outcomes
