"""A worker process of the process executor: ``python -m fanflow.executors._worker``.

Reads jobs from stdin and writes replies to stdout, each an 8-byte length
followed by a cloudpickle payload. The job's own prints go to stderr, so
they cannot corrupt the replies.
"""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
from typing import Any

from ._framing import read_message, write_message


def main() -> None:
    import cloudpickle

    # Keep the protocol pipes for ourselves; the job's stdout goes to stderr.
    jobs = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    while True:
        message = read_message(jobs)
        if message is None:
            return
        reply: tuple[bool, Any, str]
        try:
            fn, args, kwargs = cloudpickle.loads(message)
            if asyncio.iscoroutinefunction(fn):
                value = asyncio.run(fn(*args, **kwargs))
            else:
                value = fn(*args, **kwargs)
            reply = (True, value, "")
        except BaseException as exc:  # sent back as the attempt's error
            reply = (False, exc, traceback.format_exc())
        try:
            payload = cloudpickle.dumps(reply)
        except Exception as exc:
            what = "result" if reply[0] else "exception"
            error = TypeError(f"the {what} cannot be sent back from the worker: {exc}")
            payload = cloudpickle.dumps((False, error, reply[2]))
        try:
            write_message(replies, payload)
        except (BrokenPipeError, OSError):
            return


if __name__ == "__main__":
    main()
