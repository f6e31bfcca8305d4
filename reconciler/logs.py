"""The daemon's log lines: one line per event, ``key=value`` fields, journald-friendly, no secrets.

Decisions and why:

* **stderr, not the journal API.** Under systemd, stderr *is* the journal (the unit keeps the
  default ``StandardError=journal``), and a process that only writes lines also works in a
  terminal, in ``docker logs`` and in tests. No ``systemd-python`` dependency.
* **Priority prefixes instead of timestamps under journald.** journald parses a leading
  ``<N>`` (``sd-daemon.h``'s ``SD_ERR`` ... ``SD_DEBUG``) as the line's syslog priority, so
  ``journalctl -p warning`` and the colours work; it stamps each line itself, so a timestamp of
  ours would be noise. We detect the journal the documented way: ``$JOURNAL_STREAM`` holds
  ``device:inode`` of the stream systemd connected, and we compare it with stderr's
  (``systemd.exec(5)``). Anywhere else lines get a local timestamp and the level name.
* **One event, one line, fields last.** ``experiment finished spec=qwen7b experiment=12
  state=COMPLETE`` reads well in ``journalctl`` and greps well (``grep spec=qwen7b``). Field
  values with spaces, quotes or ``=`` are double-quoted with backslash escapes (logfmt), so a
  line splits back into its fields unambiguously. A traceback is the only multi-line record;
  under journald each of its lines carries the record's priority, so ``-p err`` shows it whole.
* **Redaction at the handler.** A :class:`SecretFilter` on the handler sees every record of
  every logger (ours, git's errors, aiohttp's, optuna's), and blanks values of secret-looking
  environment variables (``HF_TOKEN``, ``*_TOKEN``, ``*SECRET*``, ``*PASSWORD*`` ...: the same
  rule as engine log tails, :func:`backends.deploy.base.secret_values`) and the userinfo of
  URLs (``https://user:token@host`` → ``https://***@host``). Secrets come only from the
  environment, so the environment is where we learn them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

from core.redact import Redactor, mask_urls

__all__ = [
    "FIELDS_ATTR",
    "LEVEL_ENV",
    "EventLogger",
    "JournalFormatter",
    "SecretFilter",
    "TextFormatter",
    "bind",
    "format_fields",
    "journal_priority",
    "log_event",
    "redact_urls",
    "setup_logging",
    "stream_is_journal",
]

#: the attribute of a LogRecord that carries an event's fields (for formatters that want them
#: structured; the text formatters need nothing, the fields are already in the message)
FIELDS_ATTR = "autotuner_fields"

#: the environment variable that sets the level when the caller gives none
LEVEL_ENV = "AUTOTUNER_LOG_LEVEL"

#: libraries that report routine work at INFO ("Added job", "3 changes detected"): at the
#: daemon's default level they would drown its own events, so they speak from WARNING up
#: unless the daemon runs at DEBUG
_CHATTY_LIBRARIES = ("apscheduler", "watchfiles", "urllib3", "docker", "kubernetes", "git", "asyncio")

#: fields that come first, in this order, whatever order the caller used
_FIRST_FIELDS = ("spec", "experiment")

#: ``logging.Logger._log`` keywords that a bound logger must pass through, not treat as fields
_LOGGING_KWARGS = frozenset({"exc_info", "stack_info", "stacklevel", "extra"})

_BARE_VALUE = re.compile(r"^[^\s\"'=\\]+$")
#: ``scheme://userinfo@``: the userinfo of any URL is a credential or a user name, and the
#: host part that follows is all a reader needs


# -- fields -------------------------------------------------------------------------------------


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, ".6g")
    text = str(value)
    if _BARE_VALUE.match(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def format_fields(fields: Mapping[str, object]) -> str:
    """``key=value`` pairs, ``spec`` and ``experiment`` first; ``None`` values are left out.

    >>> format_fields({"state": "FAILED", "spec": "qwen", "reason": "out of memory"})
    'spec=qwen state=FAILED reason="out of memory"'
    """
    keys = [k for k in _FIRST_FIELDS if k in fields] + [k for k in fields if k not in _FIRST_FIELDS]
    return " ".join(f"{k}={_value(fields[k])}" for k in keys if fields[k] is not None)


def _with_fields(message: str, fields: Mapping[str, object], *, has_args: bool) -> str:
    text = format_fields(fields)
    if not text:
        return message
    # the message is %-formatted later when it has args: a '%' in a field value must survive
    return f"{message} {text.replace('%', '%%') if has_args else text}"


def log_event(logger: logging.Logger, level: int, message: str, /, **fields: object) -> None:
    """Log one event as ``message key=value ...``; the fields also ride on the record.

    ``message`` is taken literally (no ``%`` formatting): say what happened in a few fixed
    words and put the variable parts in fields, so that lines group by message::

        log_event(log, logging.INFO, "experiment finished", spec=name, experiment=12,
                  state="COMPLETE", duration_s=412.5)
    """
    if not logger.isEnabledFor(level):
        return
    line = _with_fields(message, fields, has_args=False)
    # stacklevel=2: the record names the caller's line, not this helper
    logger.log(level, "%s", line, extra={FIELDS_ATTR: dict(fields)}, stacklevel=2)


class EventLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger with fields bound to it (``spec=...``), added to every line it writes.

    Keyword arguments that ``logging`` does not know become fields of that one line, so a
    study's code reads ``log.info("experiment started", experiment=n, gpus="0,1")``. Use
    :func:`bind` to make one.
    """

    def __init__(self, logger: logging.Logger, fields: Mapping[str, object]) -> None:
        super().__init__(logger, dict(fields))

    @property
    def fields(self) -> dict[str, object]:
        return dict(self.extra or {})

    def bind(self, **fields: object) -> EventLogger:
        """A new logger with these fields added to (or replacing) the bound ones."""
        return EventLogger(self.logger, {**self.fields, **fields})

    # every public method goes through _emit, so that the record names the caller's line
    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        self._emit(level, msg, args, kwargs)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._emit(logging.DEBUG, msg, args, kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._emit(logging.INFO, msg, args, kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._emit(logging.WARNING, msg, args, kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._emit(logging.ERROR, msg, args, kwargs)

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        self._emit(logging.ERROR, msg, args, {**kwargs, "exc_info": exc_info})

    def critical(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._emit(logging.CRITICAL, msg, args, kwargs)

    def _emit(self, level: int, msg: object, args: tuple[object, ...], kwargs: dict[str, Any]) -> None:
        if not self.isEnabledFor(level):
            return
        fields = self.fields
        fields.update({k: kwargs.pop(k) for k in list(kwargs) if k not in _LOGGING_KWARGS})
        extra = dict(kwargs.pop("extra", None) or {})
        extra[FIELDS_ATTR] = fields
        # frames between the caller and logger.log: this one and the public method
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 2
        self.logger.log(
            level, _with_fields(str(msg), fields, has_args=bool(args)), *args, extra=extra, **kwargs
        )


def bind(logger: logging.Logger | str, **fields: object) -> EventLogger:
    """``bind(log, spec="qwen7b")``: every line of the result carries ``spec=qwen7b``."""
    base = logging.getLogger(logger) if isinstance(logger, str) else logger
    return EventLogger(base, fields)


# -- secrets ------------------------------------------------------------------------------------


redact_urls = mask_urls


class SecretFilter(logging.Filter):
    """Blank secrets out of every record that passes (message, arguments and traceback).

    The values come from ``environ`` when the filter is made (secret-looking names, and
    passwords inside URLs) plus any given to :meth:`add`. Attach it to a *handler*: a filter
    on a logger does not see records that its child loggers propagate.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> None:
        super().__init__()
        env = os.environ if environ is None else environ
        self._redactor = Redactor.from_env(env, extra)

    def add(self, *values: str) -> None:
        """Treat these values as secrets too (values shorter than 4 characters are ignored)."""
        self._redactor.add(*values)

    def redact(self, text: str) -> str:
        return self._redactor.redact(text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # arguments that do not fit the format: the handler reports that bug itself
            return True
        clean = self.redact(message)
        if clean != message:
            # a secret may sit in the arguments: keep the formatted, clean text only
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # Formatter.format reuses a cached exc_text: fill the cache with the clean text
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


# -- formatting ---------------------------------------------------------------------------------


def journal_priority(levelno: int) -> int:
    """A Python level as a syslog priority (``<2>`` crit ... ``<7>`` debug)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno > logging.INFO:
        return 5  # notice: a custom level between INFO and WARNING
    if levelno >= logging.INFO:
        return 6
    return 7


def _one_line(text: str) -> str:
    """A message's own line breaks, escaped: one event stays one line (and one journal entry)."""
    text = text.rstrip()
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


class JournalFormatter(logging.Formatter):
    """``<4>reconciler.study: message key=value``: priority prefix, no timestamp.

    Line breaks inside the message are escaped (``\\n``). A traceback stays readable on its
    own lines, and every one of them gets the prefix: journald stores each line as its own
    entry, and all of a traceback should be found at the record's priority.
    """

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _one_line(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{journal_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


class TextFormatter(logging.Formatter):
    """``2025-01-31T12:00:00.123+0100 WARNING reconciler.study: message key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _one_line(super().formatMessage(record))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # ISO 8601 with the offset: lines from several hosts must compare without guessing
        local = time.localtime(record.created)
        return (
            time.strftime("%Y-%m-%dT%H:%M:%S", local)
            + f".{int(record.msecs):03d}"
            + time.strftime("%z", local)
        )


def stream_is_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` is the journal stream systemd connected (``$JOURNAL_STREAM``)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):
        # no real descriptor (a captured stream), or a malformed variable: not the journal
        return False


def _level(level: int | str | None, environ: Mapping[str, str]) -> int:
    if level is None:
        level = environ.get(LEVEL_ENV) or "INFO"
    if isinstance(level, int):
        return level
    name = level.strip().upper()
    if name.isdigit():
        return int(name)
    value = logging.getLevelName(name)
    if not isinstance(value, int):
        source = f"{LEVEL_ENV}={level!r}" if environ.get(LEVEL_ENV) == level else f"log level {level!r}"
        raise ValueError(f"{source} is not a log level: use one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return value


_INSTALLED: list[logging.Handler] = []


def setup_logging(
    level: int | str | None = None,
    *,
    journald: bool | None = None,
    stream: TextIO | None = None,
    environ: MutableMapping[str, str] | None = None,
) -> logging.Handler:
    """Send every logger's records to ``stream`` (stderr), one line each, secrets redacted.

    ``level``: a ``logging`` level or its name; ``None`` reads ``$AUTOTUNER_LOG_LEVEL``
    (default ``INFO``). A bad name raises ``ValueError`` with a message fit for the user.
    ``journald``: ``None`` detects whether ``stream`` is connected to the journal; ``True``
    or ``False`` forces the priority-prefixed or the timestamped format.

    It replaces the root logger's handlers (what ``logging.basicConfig(force=True)`` does),
    so calling it again, or after the CLI's ``basicConfig``, leaves exactly one handler. It
    also routes ``warnings`` and optuna's messages (optuna has its own stderr handler) through
    this handler, so they are formatted and redacted like ours, and keeps chatty libraries
    (APScheduler, watchfiles, ...) at WARNING unless ``level`` is DEBUG. Returns the handler; its
    :class:`SecretFilter` is ``handler.filters[0]``, for callers that learn more secrets.
    """
    env = os.environ if environ is None else environ
    threshold = _level(level, env)
    out = sys.stderr if stream is None else stream
    use_journal = stream_is_journal(out, env) if journald is None else journald

    handler = logging.StreamHandler(out)
    handler.setFormatter(JournalFormatter() if use_journal else TextFormatter())
    handler.addFilter(SecretFilter(env))

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if old in _INSTALLED:
            _INSTALLED.remove(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(threshold)
    _INSTALLED.append(handler)

    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET if threshold <= logging.DEBUG else logging.WARNING)
    logging.captureWarnings(True)
    # optuna installs its own stderr handler when it is first imported; import it now (the
    # daemon needs it anyway) so that the switch below is not undone by a later import
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    return handler
