"""BLAS thread limits for the streaming paths (training, scoring): a low-level helper that
depends on nothing in streamgd."""

from __future__ import annotations

from threadpoolctl import threadpool_limits

__all__ = ["single_blas_thread"]


def single_blas_thread():
    """One BLAS thread while streaming: the prefetch thread decodes with Arrow beside the
    training thread, and BLAS threads competing with Arrow's for 2 cores cost up to 4x at
    these matrix sizes; one never costs more than it gives here (see BENCHMARKS.md)."""
    return threadpool_limits(limits=1, user_api="blas")
