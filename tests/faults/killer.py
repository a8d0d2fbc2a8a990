"""Run a ``sidrec`` command that SIGKILLs itself at a chosen point.

    python tests/faults/killer.py MODULE:ATTR N WHEN -- sidrec-args...

``MODULE:ATTR`` names a function or method (``polars:DataFrame.write_parquet``); on its
``N``-th call the process kills itself with SIGKILL, ``before`` the call runs or ``after`` it
returns. No cleanup handler runs, exactly as when the machine loses power or the OOM killer
strikes. Nothing in sidrec knows about this: the points are patched in from outside.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
from typing import Any


def arm(target: str, n: int, when: str) -> None:
    """Patch ``target`` to SIGKILL the process on its ``n``-th call (``before`` / ``after``)."""
    module_name, _, attr = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    calls = 0

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == n and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if calls == n and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(
        owner,
        name,
        staticmethod(wrapper) if isinstance(owner.__dict__.get(name), staticmethod) else wrapper,
    )


if __name__ == "__main__":
    target, n, when, sep, *argv = sys.argv[1:]
    assert sep == "--" and when in ("before", "after"), sys.argv
    arm(target, int(n), when)
    from sidrec.app.cli import main

    sys.exit(main(argv))
