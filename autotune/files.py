"""Writing files that readers and concurrent writers share."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the whole new one,
    never half of it: through a temporary file of this writer's own (process and thread) in
    the same folder, then a rename. Several processes may write the same path at once
    (workers of one shared study each export the config); the last rename wins, and none
    fails because another renamed its temporary file away."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
