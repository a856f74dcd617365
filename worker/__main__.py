"""``python -m worker``: run one training worker (the same as ``aae worker``)."""

from __future__ import annotations

import argparse
import logging
import sys

from aae_jobs import logs
from worker.runner import run
from worker.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker", description="Run a training "
                                     "worker on the job queue (settings: AAE_* variables).")
    parser.add_argument("--burst", action="store_true", help="quit when the queue is empty")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    args = parser.parse_args(argv)
    settings = get_settings()
    logs.configure(settings.log_format, logging.DEBUG if args.verbose else logging.INFO)
    run(settings, burst=args.burst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
