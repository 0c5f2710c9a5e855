"""Group commit: the threads of one process that need the same server at the same moment share one
round trip (Redis admissions, ledger INSERTs).

The first caller leads: it sends what is pending (at least its own call) in one go. Calls that
arrive while that round trip is in flight queue up; when it returns, the leader hands the lead to
the first of them, which sends the whole queue. A lone call is never delayed (it leads at once);
under concurrency each round trip serves several calls. Every caller gets its own result or error,
and returns only once its own call has been answered by the server.
"""

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar


class Wakeup:
    """A one-shot `threading.Event` (set once, waited on by one thread) that costs a lock to make: a
    `threading.Event` is a Condition around a lock, ~5 µs to create, and every call makes one."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()  # held until set()

    def set(self) -> None:
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        self._lock.release()  # stays set for any later wait()
        return True


@dataclass(kw_only=True, eq=False)
class Pending:
    """One caller's call: what the sender fills in, and the caller's wake-up."""

    result: Any = None
    error: BaseException | None = None
    lead: bool = False
    done: Wakeup = field(default_factory=Wakeup)

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


P = TypeVar("P", bound=Pending)


class Coalescer(Generic[P]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[P] = []
        self._busy = False

    def call(self, call: P, send: Callable[[Sequence[P]], None], *, timeout: float | None = None) -> Any:
        """Have `call` sent, alone or with others, by `send(calls)`, which sets each call's result or
        error (an exception out of `send` becomes the error of every call it carried).

        `timeout` bounds only the wait in the queue: a call still queued then is withdrawn (never
        sent) and TimeoutError raised. A call already on its way waits for its answer, which the
        sender's own timeouts bound, and a call handed the lead meanwhile leads.
        """
        with self._lock:
            self._pending.append(call)
            lead, self._busy = not self._busy, True
        if not lead:
            if not call.done.wait(timeout):
                with self._lock:
                    queued = next((i for i, p in enumerate(self._pending) if p is call), None)
                    if queued is not None and not call.lead:
                        del self._pending[queued]
                if queued is not None and not call.lead:
                    raise TimeoutError("timed out waiting for a grouped round trip")
                call.done.wait()
            if not call.lead:
                return call.outcome()
        with self._lock:
            batch, self._pending = self._pending, []
        try:
            send(batch)
        except BaseException as exc:
            for waiting in batch:
                waiting.error = exc
        finally:
            with self._lock:
                if self._pending:
                    successor = self._pending[0]
                    successor.lead = True
                    successor.done.set()
                else:
                    self._busy = False
            for waiting in batch:
                if waiting is not call:
                    waiting.done.set()
        return call.outcome()
