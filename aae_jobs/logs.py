"""The log lines of every process (the API, a worker, the command line): each carries the
id of the work it belongs to, and is written as text or as one JSON object per line.

That id is a context variable, ``log_id``: the API sets it to the request's id for the
request's duration (``service.core.logs.RequestContext``), a worker to the job's id while it
runs the job (``for_job``), so that every line of a request or of a training job,
whichever logger wrote it, can be found by one id (``-`` outside both).
``AAE_LOG_FORMAT=json`` (``AAESettings.log_format``) writes one JSON object per line:
time, level, logger, message, id (under ``request_id``) and the fields a line adds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

log_id: ContextVar[str] = ContextVar("log_id", default="-")

TEXT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
_installed = False


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``fields``: the ``extra=`` fields a line may carry."""

    fields: tuple[str, ...] = ()

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage(),
                 "request_id": getattr(record, "request_id", "-")}
        entry.update({k: getattr(record, k) for k in self.fields if hasattr(record, k)})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def install_ids() -> None:
    """Every log record, of any logger, carries the current ``log_id`` (as
    ``request_id``: the name the API's lines have always had)."""
    global _installed
    if _installed:
        return
    make = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make(*args, **kwargs)
        record.request_id = log_id.get()
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


def configure(log_format: str, level: int = logging.INFO) -> None:
    """The logging of a process that is not the API (a worker, the command line): ids on
    every record; unless the process has set up logging already, one handler on stderr,
    text or JSON."""
    install_ids()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT))
    logging.basicConfig(level=level, handlers=[handler])  # no-op if the root has handlers


@contextmanager
def for_job(job_id: str) -> Iterator[None]:
    """The lines logged inside carry ``job_id`` as their id."""
    token = log_id.set(job_id)
    try:
        yield
    finally:
        log_id.reset(token)
