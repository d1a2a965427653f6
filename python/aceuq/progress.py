"""Progress bars for long loops (tqdm, imported only when a bar is shown)."""
from __future__ import annotations

from typing import Iterable, Optional


def progress(items: Iterable, enabled: bool, desc: str, unit: Optional[str] = None,
             total: Optional[int] = None) -> Iterable:
    """``items`` itself, or wrapped in a transient tqdm bar when ``enabled`` and stderr is a
    terminal (no bars in logs and pipes). total: the number of items, where they have no len()."""
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=unit or "it", leave=False, disable=None, total=total)


def counter(total: int, enabled: bool, unit: str = "it"):
    """A bar counted by hand (``update()``, ``set_description()``, ``close()``) for work that is not
    one loop, on the same rule: shown only when ``enabled`` and stderr is a terminal."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, disable=None if enabled else True)
