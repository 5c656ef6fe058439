"""Which kernel :class:`~rymi_codecs.resample.Resampler` runs: compiled C or numpy.

``rymi_codecs._fir`` is the resampler's inner loop in C (``_fir.c``, built by the install:
``hatch_build.py``). It computes the same integers as the numpy path and rounds them the
same way, so the two give the same bytes; the C one costs a quarter to a third of the
CPU per frame (docs/codecs.md, "The compiled path"). Without it the numpy path runs.

``RYMI_CODECS_PURE=1`` in the environment (read once, at import) makes numpy the default
even when the module is built, e.g. to compare the two in a load test.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rymi_codecs._fir import Filter

__all__ = ["ACCELERATED", "BUILT", "PURE_ENV", "UNAVAILABLE", "make_filter", "use_compiled"]

PURE_ENV = "RYMI_CODECS_PURE"
"""Environment variable: ``1`` makes the numpy path the default."""


def _load() -> tuple[type[Filter] | None, str]:
    try:
        from rymi_codecs._fir import Filter
    except ImportError as exc:  # not built: no C compiler at install time
        return None, str(exc)
    return Filter, ""


_FILTER, UNAVAILABLE = _load()
"""The compiled filter type (``None`` when not built), and the import error's message."""

BUILT = _FILTER is not None
"""``rymi_codecs._fir`` imports."""

ACCELERATED = BUILT and os.environ.get(PURE_ENV, "").strip() != "1"
"""Resamplers use the compiled kernel by default (built, and not turned off by the env)."""


def use_compiled(compiled: bool | None) -> bool:
    """Resolve a resampler's ``compiled`` argument: ``None`` means :data:`ACCELERATED`.

    Raises:
        ImportError: ``compiled=True`` and the module is not built.
    """
    if compiled is None:
        return ACCELERATED
    if compiled and not BUILT:
        raise _not_built()
    return compiled


def make_filter(taps: Sequence[int], up: int, down: int) -> Filter:
    """A compiled filter for integer ``taps``, upsampling by ``up`` and decimating by ``down``.

    Raises:
        ImportError: the module is not built.
    """
    if _FILTER is None:
        raise _not_built()
    return _FILTER(taps, up, down)


def _not_built() -> ImportError:
    return ImportError(
        f"rymi_codecs._fir is not built ({UNAVAILABLE}); install a C compiler "
        "(sudo apt-get install gcc python3-dev) and reinstall: pip install -e '.[dev]'"
    )
