"""The process around a run: which device, and what Ctrl-C and SIGTERM do. Imports no torch.

* :func:`resolve_device`: ``auto | cpu | cuda`` to a ``torch.device`` (torch is imported
  only when it is called, so the CLI, sweeps and tools start without it);
* :func:`stop_on_signals`: a flag the trainer and the sweep runner poll, set by the first
  SIGINT/SIGTERM, so a run stops at a point where it can write a checkpoint;
* :func:`sigint_deferred`: hold a SIGINT until a block that must not be cut (an HDF5 write)
  is done.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


def resolve_device(name: str):
    """The ``torch.device`` for ``Config.device``; ValueError if CUDA is asked for but absent."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available (use --device auto or cpu)")
    return torch.device(name)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def stop_on_signals():
    """Yield a flag set by the first SIGINT/SIGTERM; a second SIGINT interrupts at once.

    Outside the main thread (where Python cannot install handlers) the flag is never set.
    """
    flag = {"stop": False}
    if not _in_main_thread():
        yield flag
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        if flag["stop"] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["stop"] = True

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def sigint_deferred():
    """Hold a Ctrl-C (SIGINT) until the block is done, then act on it.

    A KeyboardInterrupt raised inside h5py/HDF5 in the middle of an SWMR write can leave the
    library in a state where closing the file never returns (seen under load); deferring it
    to the end of one episode's write costs milliseconds and keeps every episode whole.
    """
    if not _in_main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, None)  # e.g. the trainer's stop flag, or Python's KeyboardInterrupt
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt
