"""What a failed micro-batch tells Spark: a short message, logged once in full by us.

A ``foreachBatch`` body that raises hands Spark its formatted Python traceback, Java stack traces of every
``Py4JJavaError`` in it included (tens of kilobytes). Spark decides whether the failure was its own stop
(``StreamExecution.isInterruptionException``) with a regular expression of the form
``Py4JJavaError: An error occurred while calling(.|\\n)*InterruptedException``, and Java's regex engine
recurses once per character of that message: past ~3,000 characters on a default 1 MiB thread stack it
throws ``StackOverflowError``. A stop that interrupts a batch mid-write then ends in a wall of stack frames,
and a real failure is reported as a stack overflow instead of itself.

So :func:`reporting_batch_errors` wraps each body: a failure is logged here with its whole traceback (unless
it is the stop's interruption, which is expected and redone by the restart), then re-raised as
:class:`BatchFailed` carrying only the exception lines (``Type: message`` and each ``Caused by:``): short for
the regex, and still naming an interruption when it is one, so Spark still classifies it right.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pyspark.sql import DataFrame

logger = logging.getLogger(__name__)

# The interruptions Spark's own stop produces (StreamExecution.IO_EXCEPTION_NAMES).
INTERRUPTIONS = (
    "java.lang.InterruptedException",
    "java.io.InterruptedIOException",
    "java.nio.channels.ClosedByInterruptException",
)
_MAX_LINES = 12
_MAX_LINE_CHARS = 400

BatchBody = Callable[[DataFrame, int], None]


class BatchFailed(Exception):
    """A micro-batch failed; the message is the original's exception lines (see the module's docstring)."""


def exception_lines(text: str) -> list[str]:
    """The lines of an error's text that name an exception, without stack frames: the first line, a Java
    cause's ``pkg.Type: message`` line, each ``Caused by:`` and ``Suppressed:``; each of bounded length."""
    kept: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("at ", "... ")) or line.endswith(" more"):
            continue
        if kept and not line.startswith((": ", "Caused by:", "Suppressed:")) and not _names_exception(line):
            continue
        kept.append(line if len(line) <= _MAX_LINE_CHARS else line[: _MAX_LINE_CHARS - 1] + "…")
        if len(kept) == _MAX_LINES:
            break
    return kept


def _names_exception(line: str) -> bool:
    head = line.split(":", 1)[0]
    return "." in head and " " not in head and head.rsplit(".", 1)[-1][:1].isupper()


def summary(error: BaseException) -> str:
    """``module.Type: message`` and the causes' exception lines, the way a traceback's last line names it."""
    kind = type(error)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    try:
        text = str(error)
    except Exception as exc:  # a Py4JJavaError's text is fetched from the JVM
        text = f"{getattr(error, 'errmsg', '')} (its Java text could not be read: {exc})"
    lines = exception_lines(text) or [""]
    return "\n".join([f"{name}: {lines[0]}", *lines[1:]])


def is_interruption(text: str) -> bool:
    """Whether an error's text names one of the interruptions a stopping query raises."""
    return any(name in text for name in INTERRUPTIONS)


def reporting_batch_errors(query_name: str, body: BatchBody) -> BatchBody:
    """``body`` as a ``foreachBatch`` function: failures reach Spark short and are logged here in full."""
    logging.getLogger("py4j.clientserver").addFilter(_DROP_REPORTED)  # once: the same filter is kept once

    def run(rows: DataFrame, batch_id: int) -> None:
        try:
            body(rows, batch_id)
        except Exception as error:
            short = summary(error)
            if is_interruption(short):
                logger.debug("%s: batch %d interrupted by the stop: %s", query_name, batch_id, short)
            else:
                logger.exception("%s: batch %d failed; the stream stops with it", query_name, batch_id)
            raise BatchFailed(short) from None

    run.__name__ = f"{query_name}_batch"
    return run


class _DropReportedBatchFailures(logging.Filter):
    """py4j logs every exception a Python callback raises, traceback included; ours are logged already."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], BatchFailed))


_DROP_REPORTED = _DropReportedBatchFailures()
