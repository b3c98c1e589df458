"""Run a block of torch code on a fixed number of CPU threads.

oneDNN's convolutions split their sums across threads, so the thread count
decides the order of floating-point additions and with it the last bits of
every activation.  Inference extracts each patient's deep features on one
thread, and training does the same for every cohort timepoint (and trains on
a fixed count), so a patient scored by the service gets the very numbers
training computed for them.

This module imports torch at import time: import it lazily from anything on
the path of ``icibenefit --help`` or the service's start-up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(num_threads: int) -> Iterator[None]:
    """Run the block on ``num_threads`` torch threads, restoring the caller's count after.

    Parameters
    ----------
    num_threads
        Threads for the block; 1 gives one fixed summation order per call.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
