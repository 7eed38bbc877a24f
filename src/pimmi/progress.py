"""Progress bars on stderr (rate and ETA), silent when asked."""

from __future__ import annotations

import sys

from tqdm import tqdm


def bar(total: int | None, desc: str, enabled: bool, unit: str = "img") -> tqdm:
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 10,
        smoothing=0.1,
        leave=sys.stderr.isatty(),
    )
