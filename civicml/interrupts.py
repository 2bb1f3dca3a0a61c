"""Ctrl-C that cannot be lost on the way.

Python's own handler raises ``KeyboardInterrupt`` in whatever the main thread runs at that moment, and two
places there drop it: an object's finalizer (``__del__``, a weakref callback: Python prints "Exception
ignored" and goes on) and a ``finally`` block that raises an error of its own, which replaces it. Either way
a long command went on as if nobody had pressed Ctrl-C. :func:`catching` installs a handler that also
remembers the interrupt; long work calls :func:`check` where stopping is safe (a training's step, a trial's
start and end) and stops there if an interrupt was dropped on the way.

    with catching():
        ...  # long work; a loop calls check() between steps
"""

from __future__ import annotations

import contextlib
import signal
import threading

_seen = False


def _handler(signum, frame) -> None:
    global _seen
    _seen = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def catching():
    """While inside, Ctrl-C raises ``KeyboardInterrupt`` as ever and is also remembered for :func:`check`.
    Does nothing off the main thread or where SIGINT is not Python's default handler (a server's own,
    a process that ignores it)."""
    global _seen
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    _seen = False
    signal.signal(signal.SIGINT, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _seen = False


def seen() -> bool:
    """Whether Ctrl-C was pressed since :func:`catching` began."""
    return _seen


def check() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed, even if what it first interrupted dropped it."""
    if _seen:
        raise KeyboardInterrupt
