"""Log lines as journald and a terminal get them: formats, fields, levels, redaction.

Records go through the real handler that :func:`setup_logging` installs, writing into a real
file; journald detection is checked against that file's real device and inode.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shlex
import string
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.logs import (
    FIELDS_ATTR,
    SecretFilter,
    bind,
    format_fields,
    journal_priority,
    log_event,
    redact_urls,
    setup_logging,
    stream_is_journal,
)

REPO = Path(__file__).resolve().parents[3]
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """setup_logging changes process-wide state; give every test the state it found."""
    import optuna

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        if h not in handlers:
            h.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    logging.captureWarnings(False)
    for name in ("apscheduler", "watchfiles", "urllib3", "docker", "kubernetes", "git", "asyncio"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    optuna.logging.disable_propagation()
    optuna.logging.enable_default_handler()


@pytest.fixture
def out(tmp_path: Path) -> Iterator[io.TextIOWrapper]:
    with open(tmp_path / "stderr.log", "w+", encoding="utf-8") as f:
        yield f


def lines(stream: io.TextIOWrapper) -> list[str]:
    stream.flush()
    stream.seek(0)
    return stream.read().splitlines()


def journal_env(stream: io.TextIOWrapper) -> dict[str, str]:
    st = os.fstat(stream.fileno())
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# -- fields -------------------------------------------------------------------------------------


def test_fields_spec_and_experiment_first_then_callers_order() -> None:
    text = format_fields({"state": "COMPLETE", "experiment": 12, "duration_s": 412.5, "spec": "qwen7b"})
    assert text == "spec=qwen7b experiment=12 state=COMPLETE duration_s=412.5"


def test_field_values_are_quoted_when_needed() -> None:
    assert format_fields({"reason": "out of memory"}) == 'reason="out of memory"'
    assert format_fields({"msg": 'said "hi"'}) == r'msg="said \"hi\""'
    assert format_fields({"expr": "a=b"}) == 'expr="a=b"'
    assert format_fields({"empty": ""}) == 'empty=""'
    assert format_fields({"tail": "line1\nline2"}) == r'tail="line1\nline2"'
    assert format_fields({"path": r"C:\x"}) == r'path="C:\\x"'
    assert format_fields({"ok": True, "pruned": False}) == "ok=true pruned=false"
    assert format_fields({"ratio": 1 / 3, "big": 1e-9}) == "ratio=0.333333 big=1e-09"
    assert format_fields({"experiment": None, "spec": "a"}) == "spec=a"
    assert format_fields({}) == ""


_KEYS = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)
_VALUES = st.text(st.characters(codec="utf-8", exclude_characters="\n\r\x00"), max_size=30)


@given(st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_fields_split_back_unambiguously(fields: dict[str, str]) -> None:
    """Any value, spaces and quotes included, comes back whole from a shell-style split."""
    words = shlex.split(format_fields(fields))
    assert dict(w.split("=", 1) for w in words) == fields


def test_priorities_follow_sd_daemon() -> None:
    assert [journal_priority(n) for n in (5, 10, 20, 25, 30, 40, 50, 60)] == [7, 7, 6, 5, 4, 3, 2, 2]


# -- one line per event -------------------------------------------------------------------------


def test_journal_format_priority_prefix_no_timestamp(out: io.TextIOWrapper) -> None:
    setup_logging("DEBUG", stream=out, environ=journal_env(out))
    log = logging.getLogger("reconciler.study")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    assert lines(out) == [
        "<7>reconciler.study: d",
        "<6>reconciler.study: i",
        "<4>reconciler.study: w",
        "<3>reconciler.study: e",
        "<2>reconciler.study: c",
    ]


def test_text_format_has_a_timestamp_and_level(out: io.TextIOWrapper) -> None:
    setup_logging("INFO", stream=out, environ={})
    logging.getLogger("reconciler.daemon").warning("sync failed")
    logging.getLogger("reconciler.daemon").debug("below the level")
    [line] = lines(out)
    assert re.fullmatch(STAMP + r" WARNING reconciler\.daemon: sync failed", line), line


def test_journal_detection_compares_device_and_inode(out: io.TextIOWrapper, tmp_path: Path) -> None:
    assert stream_is_journal(out, journal_env(out))
    with open(tmp_path / "other", "w") as other:
        assert not stream_is_journal(out, journal_env(other))
    assert not stream_is_journal(out, {})
    assert not stream_is_journal(out, {"JOURNAL_STREAM": "garbage"})
    assert not stream_is_journal(out, {"JOURNAL_STREAM": "x:y"})
    assert not stream_is_journal(io.StringIO(), journal_env(out))


def test_forced_journald_wins_over_detection(out: io.TextIOWrapper) -> None:
    setup_logging("INFO", stream=out, environ={}, journald=True)
    logging.getLogger("x").info("forced")
    setup_logging("INFO", stream=out, environ=journal_env(out), journald=False)
    logging.getLogger("x").info("plain")
    first, second = lines(out)
    assert first == "<6>x: forced"
    assert re.fullmatch(STAMP + " INFO x: plain", second)


def test_event_line_carries_fields(out: io.TextIOWrapper) -> None:
    setup_logging("INFO", stream=out, environ=journal_env(out))
    log_event(
        logging.getLogger("reconciler.study"),
        logging.WARNING,
        "experiment failed",
        state="FAILED",
        spec="qwen7b",
        experiment=7,
        reason="out of memory",
    )
    assert lines(out) == [
        '<4>reconciler.study: experiment failed spec=qwen7b experiment=7 state=FAILED reason="out of memory"'
    ]


def test_event_message_is_literal_and_record_names_the_caller() -> None:
    handler = Recorder()
    records = handler.records
    log = logging.getLogger("ops-test-literal")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log_event(log, logging.INFO, "100% done", spec="a", note="50%")
        line = sys._getframe().f_lineno - 1
        log_event(log, logging.DEBUG, "below the level", spec="a")
    finally:
        log.removeHandler(handler)
    [record] = records
    assert record.getMessage() == "100% done spec=a note=50%"
    assert getattr(record, FIELDS_ATTR) == {"spec": "a", "note": "50%"}
    assert (record.filename, record.lineno) == (Path(__file__).name, line)


def test_bound_logger_adds_fields_to_every_line(out: io.TextIOWrapper) -> None:
    setup_logging("DEBUG", stream=out, environ=journal_env(out))
    log = bind("reconciler.study", spec="qwen7b")
    log.info("study resumed", done=12, left=28)
    one = log.bind(experiment=13)
    one.debug("engine ready after %.1fs", 41.26, port=8123)
    one.warning("load point %s: %d%% errors", "c=64", 12, extra={"unrelated": 1})
    log.error("spec stalled", spec="other")  # a per-line field wins over a bound one
    assert lines(out) == [
        "<6>reconciler.study: study resumed spec=qwen7b done=12 left=28",
        "<7>reconciler.study: engine ready after 41.3s spec=qwen7b experiment=13 port=8123",
        "<4>reconciler.study: load point c=64: 12% errors spec=qwen7b experiment=13",
        "<3>reconciler.study: spec stalled spec=other",
    ]
    assert log.fields == {"spec": "qwen7b"}


def test_bound_logger_with_percent_in_field_and_args(out: io.TextIOWrapper) -> None:
    setup_logging("INFO", stream=out, environ=journal_env(out))
    bind(logging.getLogger("r"), spec="a").info("at %s", "c=8", note="100% busy")
    assert lines(out) == ['<6>r: at c=8 spec=a note="100% busy"']


def test_bound_logger_record_names_the_caller() -> None:
    handler = Recorder()
    records = handler.records
    base = logging.getLogger("ops-test-bound")
    base.addHandler(handler)
    base.setLevel(logging.DEBUG)
    log = bind(base, spec="a")
    try:
        log.info("x")
        first = sys._getframe().f_lineno - 1
        log.log(logging.WARNING, "y", experiment=2)
        second = sys._getframe().f_lineno - 1
    finally:
        base.removeHandler(handler)
    assert [(r.filename, r.lineno) for r in records] == [
        (Path(__file__).name, first),
        (Path(__file__).name, second),
    ]
    assert getattr(records[1], FIELDS_ATTR) == {"spec": "a", "experiment": 2}


def test_a_message_with_line_breaks_stays_one_line(out: io.TextIOWrapper) -> None:
    setup_logging("INFO", stream=out, environ=journal_env(out))
    logging.getLogger("git").warning("push rejected:\n! [rejected] main -> main\n")
    assert lines(out) == [r"<4>git: push rejected:\n! [rejected] main -> main"]


def test_traceback_lines_all_carry_the_priority(out: io.TextIOWrapper) -> None:
    setup_logging("INFO", stream=out, environ=journal_env(out))
    try:
        raise RuntimeError("backend broke")
    except RuntimeError:
        bind("reconciler.daemon", spec="a").exception("pass failed")
    got = lines(out)
    assert got[0] == "<3>reconciler.daemon: pass failed spec=a"
    assert got[1] == "<3>Traceback (most recent call last):"
    assert got[-1] == "<3>RuntimeError: backend broke"
    assert all(line.startswith("<3>") for line in got)


def test_warnings_and_optuna_go_through_the_same_handler(out: io.TextIOWrapper) -> None:
    import optuna

    setup_logging("INFO", stream=out, environ=journal_env(out))
    # pytest turns warnings into errors (pyproject); let this one through to logging
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old option", UserWarning, stacklevel=1)
    optuna.logging.get_logger("optuna.study").warning("trial 3 failed")
    got = lines(out)
    assert any(line.startswith("<4>py.warnings: ") and "UserWarning: old option" in line for line in got), got
    assert "<4>optuna.study: trial 3 failed" in got


def test_chatty_libraries_speak_up_only_when_it_matters(out: io.TextIOWrapper) -> None:
    setup_logging("INFO", stream=out, environ=journal_env(out))
    sched = logging.getLogger("apscheduler.scheduler")
    sched.info('Added job "Event.set" to job store "default"')
    sched.warning("Run time of job was missed by 0:00:05")
    logging.getLogger("reconciler.daemon").info("pass done")
    assert lines(out) == [
        "<4>apscheduler.scheduler: Run time of job was missed by 0:00:05",
        "<6>reconciler.daemon: pass done",
    ]
    setup_logging("DEBUG", stream=out, environ=journal_env(out))
    sched.info("Scheduler started")
    assert lines(out)[-1] == "<6>apscheduler.scheduler: Scheduler started"


def test_setup_twice_leaves_one_handler(out: io.TextIOWrapper) -> None:
    logging.basicConfig(force=True)  # what the CLI does before a command runs
    setup_logging("INFO", stream=out, environ={})
    handler = setup_logging("WARNING", stream=out, environ={})
    assert logging.getLogger().handlers == [handler]
    assert logging.getLogger().level == logging.WARNING
    assert isinstance(handler.filters[0], SecretFilter)


def test_level_from_environment_and_bad_names(out: io.TextIOWrapper) -> None:
    setup_logging(None, stream=out, environ={"AUTOTUNER_LOG_LEVEL": "debug"})
    assert logging.getLogger().level == logging.DEBUG
    setup_logging(None, stream=out, environ={})
    assert logging.getLogger().level == logging.INFO
    setup_logging("15", stream=out, environ={})
    assert logging.getLogger().level == 15
    with pytest.raises(
        ValueError, match=r"AUTOTUNER_LOG_LEVEL='verbose' is not a log level: use one of DEBUG"
    ):
        setup_logging(None, stream=out, environ={"AUTOTUNER_LOG_LEVEL": "verbose"})
    with pytest.raises(ValueError, match=r"log level 'loud' is not a log level"):
        setup_logging("loud", stream=out, environ={})


# -- secrets ------------------------------------------------------------------------------------


SECRET_ENV = {
    "HF_TOKEN": "hf_AbCdEfGhIjKlMnOp",
    "AUTOTUNER_GIT_TOKEN": "github_pat_11ABCDEFG",
    "DB_PASSWORD": "correct horse battery",
    "MY_SECRET_KEY": "s3cr3t-value",
    "OPENAI_API_KEY": "sk-live-123456",
    "AUTOTUNER_REPO": "https://bot:glpat-XyZ987654@gitlab.example.com/ml/specs.git",
    "MIRROR": "https://ghp_0123456789abcdefghij@github.com/o/r.git",
    "SHORT_TOKEN": "abc",  # too short to redact without shredding the log
    "AUTOTUNER_BRANCH": "main",
}


def test_url_userinfo_is_masked() -> None:
    assert (
        redact_urls("fetch https://u:p@h.example/x.git failed") == "fetch https://***@h.example/x.git failed"
    )
    assert redact_urls("ssh://git@host:22/r and http://tok@h/") == "ssh://***@host:22/r and http://***@h/"
    assert redact_urls("mail me at a@b.c, see https://h/x@y") == "mail me at a@b.c, see https://h/x@y"


def test_secret_values_are_redacted_everywhere(out: io.TextIOWrapper) -> None:
    setup_logging("INFO", stream=out, environ={**journal_env(out), **SECRET_ENV})
    log = logging.getLogger("reconciler.workspace")
    log.info("engine env HF_TOKEN=%s", SECRET_ENV["HF_TOKEN"])
    log.info("git said: Authentication failed for 'glpat-XyZ987654'")
    log_event(log, logging.INFO, "cloned", url=SECRET_ENV["AUTOTUNER_REPO"], mirror=SECRET_ENV["MIRROR"])
    log.warning(
        "db %s key %s api %s pat %s",
        *(SECRET_ENV[k] for k in ("DB_PASSWORD", "MY_SECRET_KEY", "OPENAI_API_KEY", "AUTOTUNER_GIT_TOKEN")),
    )
    try:
        raise RuntimeError(f"request with token {SECRET_ENV['HF_TOKEN']} failed")
    except RuntimeError:
        log.exception("download failed")
    text = "\n".join(lines(out))
    for name, value in SECRET_ENV.items():
        if name not in ("SHORT_TOKEN", "AUTOTUNER_BRANCH", "AUTOTUNER_REPO", "MIRROR"):
            assert value not in text, name
    assert "glpat-XyZ987654" not in text and "ghp_0123456789abcdefghij" not in text
    assert "<6>reconciler.workspace: engine env HF_TOKEN=***" in text
    assert "Authentication failed for '***'" in text
    assert "url=https://***@gitlab.example.com/ml/specs.git mirror=https://***@github.com/o/r.git" in text
    assert "<4>reconciler.workspace: db *** key *** api *** pat ***" in text
    assert "<3>RuntimeError: request with token *** failed" in text


def test_short_and_non_secret_values_are_left_alone() -> None:
    f = SecretFilter(SECRET_ENV)
    assert f.redact("branch main, abc") == "branch main, abc"
    f.add("lease-key-42", "xy")
    assert f.redact("lease-key-42 xy") == "*** xy"


def test_a_secret_containing_another_is_replaced_whole() -> None:
    f = SecretFilter({"A_TOKEN": "abcd", "B_TOKEN": "abcdefgh"})
    assert f.redact("abcdefgh") == "***"


def test_filter_survives_a_bad_format_string(out: io.TextIOWrapper) -> None:
    """A caller's bug (wrong arguments) is logging's to report, never an exception here."""
    setup_logging("INFO", stream=out, environ={})
    handler = logging.getLogger().handlers[0]
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d items", ("many",), None)
    assert handler.filters[0].filter(record) is True  # type: ignore[union-attr]


def test_under_a_real_journal_stream_pipe() -> None:
    """A child process whose stderr is the stream JOURNAL_STREAM names, as systemd sets it up."""
    read_fd, write_fd = os.pipe()
    st = os.fstat(write_fd)
    code = (
        "import logging; from reconciler.logs import setup_logging, log_event; setup_logging(); "
        "log_event(logging.getLogger('reconciler.daemon'), logging.INFO, 'ready', revision='1a2b3c4d'); "
        "logging.getLogger('reconciler.daemon').debug('hidden'); "
        "import os; logging.getLogger('x').error('token %s', os.environ['HF_TOKEN'])"
    )
    env = {
        **os.environ,
        "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
        "PYTHONPATH": str(REPO),
        "HF_TOKEN": "hf_secretsecret",
    }
    env.pop("AUTOTUNER_LOG_LEVEL", None)
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=write_fd, env=env)
    os.close(write_fd)
    with os.fdopen(read_fd) as reader:
        text = reader.read()
    assert proc.wait(timeout=60) == 0
    assert text.splitlines() == ["<6>reconciler.daemon: ready revision=1a2b3c4d", "<3>x: token ***"]
