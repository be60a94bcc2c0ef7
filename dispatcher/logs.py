"""Logging set-up shared by every process."""

from __future__ import annotations

import logging


def setup_logging(level: str, process: str) -> None:
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s %(levelname)s {process}[%(process)d] %(name)s: %(message)s",
        force=True,
    )
