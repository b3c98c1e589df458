"""The process pool and the cache keys shared by every per-timepoint stage of training.

Training visits each CT timepoint of the cohort in several stages (robustness
perturbations, feature extraction, CNN patches); every stage runs its
timepoints in one process pool with a progress bar and caches each result on
disk under a key derived from the input files' bytes.  The stages live in
:mod:`icibenefit.training.features` and :mod:`icibenefit.training.deep_features`;
holding the pool and the keying here lets both use them without importing
each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from icibenefit.pipeline.inference import PlannedTimepoint
from icibenefit.training.cache import cache_key


def timepoint_cache_key(kind: str, planned: PlannedTimepoint, parameters: Mapping[str, Any]) -> str:
    """The :func:`~icibenefit.training.cache.cache_key` of one stage's result for one timepoint.

    The input instance set is named by its files' byte digests (exact: a changed
    instance gives a new key, whatever its UID says).
    """
    digests = [
        hashlib.sha256(Path(path).read_bytes()).hexdigest()
        for path in (*planned.ct_files, planned.segmentation_file)
    ]
    return cache_key(kind, digests, parameters)


def run_parallel(
    function: Callable[..., Any],
    arguments: Sequence[tuple[Any, ...]],
    workers: int,
    progress: bool,
    description: str,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> list[Any]:
    """``function(*args)`` for every argument tuple in a process pool, in order, with a bar.

    Workers are spawned, not forked: the parent may have run torch (fine-tuning)
    and forking a process with live OpenMP threads can deadlock.
    """
    import multiprocessing

    from rich.progress import Progress

    context = multiprocessing.get_context("spawn")
    with (
        ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=initializer, initargs=initargs
        ) as pool,
        Progress(disable=not progress, transient=True) as bar,
    ):
        task = bar.add_task(description, total=len(arguments))
        futures = [pool.submit(function, *args) for args in arguments]
        results = []
        for future in futures:
            results.append(future.result())
            bar.advance(task)
    return results
