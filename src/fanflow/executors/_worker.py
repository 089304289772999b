"""A worker process of the process executor: ``python .../fanflow/executors/_worker.py``.

It runs as a script, so that a worker boots without importing fanflow (about
half its start-up time); the jobs import what they use.

Reads jobs from stdin and writes replies to stdout, each an 8-byte length
followed by a pickle. The job's own prints go to stderr, so they cannot
corrupt the replies. For each job the worker sends two messages:

* an empty message once the job is unpickled, just before it runs: the
  parent's timeout for the attempt starts then, not while this interpreter
  boots or imports the job's modules;
* ``("ok", payload, type_name, reason)``: the pickled return value, or
  ``None`` and why it cannot be pickled; or
  ``("error", payload, type_name, message, traceback)``: the pickled
  exception (``None`` if it cannot be pickled) with its type's qualified
  name, message and traceback text, so that the parent can still say what
  happened when the exception does not survive the trip.

The worker dies with its parent, whatever ends the parent (``kill -9``
included): a parent-death signal (Linux), and a thread that sees the job
pipe close and kills the worker's whole process group, the job's children
with it.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import traceback
import types
from typing import IO, Any

if __package__:
    from ._framing import PARENT_ENV, read_message, write_message
else:  # run as a script: its directory is sys.path[0], for this one import only
    from _framing import (  # type: ignore[import-not-found,no-redef]
        PARENT_ENV,
        read_message,
        write_message,
    )

    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]  # never shadow the jobs' modules with this package's

_PR_SET_PDEATHSIG = 1


def _type_name(cls: type) -> str:
    module = getattr(cls, "__module__", None)
    if module in (None, "builtins", "__main__"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as err:  # a broken __str__ must not lose the error itself
        return f"<str() failed: {type(err).__name__}>"


def _kill_my_group() -> None:
    # The worker leads its own group (a session of its own): the job's
    # children go with it.
    try:
        os.killpg(os.getpgid(0), signal.SIGKILL)
    finally:
        os._exit(1)


def _watch_parent(jobs: IO[bytes]) -> None:
    """Die as soon as the job pipe's writer, the parent, is gone."""
    poller = select.poll()
    poller.register(jobs.fileno(), 0)  # POLLHUP/POLLERR are reported regardless
    while True:
        for _, events in poller.poll():
            if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                _kill_my_group()


def _die_with_parent(jobs: IO[bytes]) -> None:
    parent = os.environ.pop(PARENT_ENV, "")
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the pipe watch below still holds
            pass
    # The parent may have died before the signal was armed.
    if parent and str(os.getppid()) != parent:
        _kill_my_group()
    if hasattr(select, "poll"):
        threading.Thread(
            target=_watch_parent, args=(jobs,), name="fanflow-parent-watch", daemon=True
        ).start()


def _error_reply(exc: BaseException, dumps: Any) -> tuple[Any, ...]:
    text = traceback.format_exc()
    try:
        payload: bytes | None = dumps(exc)
    except Exception:
        payload = None  # the parent rebuilds it from its name, message and traceback
    return ("error", payload, _type_name(type(exc)), _message(exc), text)


def _ok_reply(value: Any, dumps: Any) -> tuple[Any, ...]:
    try:
        return ("ok", dumps(value), _type_name(type(value)), "")
    except Exception as exc:
        return ("ok", None, _type_name(type(value)), f"{type(exc).__name__}: {_message(exc)}")


def main() -> None:
    """Run jobs until the parent closes the pipe."""
    import cloudpickle

    # Keep the protocol pipes for ourselves; the job's stdout goes to stderr.
    jobs = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _die_with_parent(jobs)
    dumps = cloudpickle.dumps
    while True:
        message = read_message(jobs)
        if message is None:
            return
        reply: tuple[Any, ...]
        try:
            fn, args, kwargs = cloudpickle.loads(message)
        except BaseException as exc:  # e.g. a module the worker cannot import
            reply = _error_reply(exc, dumps)
        else:
            try:
                write_message(replies, b"")  # started
            except OSError:
                return  # the parent is gone
            try:
                value = fn(*args, **kwargs)
                if isinstance(value, types.CoroutineType):
                    # A coroutine function (or a callable returning a coroutine):
                    # asyncio is imported only then, as it is most of a boot.
                    import asyncio

                    value = asyncio.run(value)
                reply = _ok_reply(value, dumps)
            except BaseException as exc:  # sent back as the attempt's error
                reply = _error_reply(exc, dumps)
        try:
            write_message(replies, dumps(reply))
        except (BrokenPipeError, OSError):
            return


if __name__ == "__main__":
    main()
