"""Run an app coroutine's first step at once, as an eager task (on Python 3.11 too).

Most GETs are answered without the app ever waiting: run as an ordinary task, each would
still cost a Task scheduled for the next loop turn and a turn of latency. Run eagerly, the
first step happens here and now; a coroutine that finishes in it leaves nothing behind,
one that waits carries on as an ordinary task, in the same context, and it is the same
task throughout: ``asyncio.current_task()`` inside the app is that task from the first line
on (anyio's cancel scopes, which Starlette and FastAPI use, depend on it).

Python 3.12+ has this built in (``eager_start``). On 3.11 a small subclass of asyncio's
pure-Python Task does the same: it runs its first step in ``__init__`` instead of scheduling
it, with itself as the current task (a request started from inside another request's task,
the next pipelined one, steps out of that task for the while).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from asyncio import futures, tasks
from collections.abc import Coroutine
from typing import Any

__all__ = ["start_eager"]

Coro = Coroutine[Any, Any, None]

if sys.version_info >= (3, 12):

    def start_eager(
        loop: asyncio.AbstractEventLoop, coro: Coro, context: contextvars.Context
    ) -> asyncio.Task[None] | None:
        """Run ``coro``'s first step now; its task if it did not finish, else None."""
        task = asyncio.Task(coro, loop=loop, context=context, eager_start=True)
        return None if task.done() else task

else:
    _current = tasks._current_tasks  # type: ignore[attr-defined]
    _register = tasks._register_task
    _names = tasks._task_name_counter  # type: ignore[attr-defined]

    class _EagerTask(tasks._PyTask):  # type: ignore[name-defined,misc]
        """asyncio's Python Task, with its first step run in ``__init__`` (3.12's
        ``eager_start``); registered as a task only if that step did not finish it."""

        def __init__(
            self, coro: Coro, loop: asyncio.AbstractEventLoop, context: contextvars.Context
        ) -> None:
            futures._PyFuture.__init__(self, loop=loop)  # type: ignore[attr-defined]
            self._name = f"Task-{_names()}"
            self._num_cancels_requested = 0
            self._must_cancel = False
            self._fut_waiter = None
            self._coro = coro
            self._context = context
            outer = _current.pop(loop, None)  # __step enters this task itself
            try:
                context.run(self._Task__step)
            finally:
                if outer is not None:
                    _current[loop] = outer
            if not self.done():
                _register(self)

    def start_eager(
        loop: asyncio.AbstractEventLoop, coro: Coro, context: contextvars.Context
    ) -> asyncio.Task[None] | None:
        """Run ``coro``'s first step now; its task if it did not finish, else None."""
        task = _EagerTask(coro, loop, context)
        return None if task.done() else task
