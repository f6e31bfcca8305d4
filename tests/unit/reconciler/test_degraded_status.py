"""The Degraded condition: set on trouble, shown by ``autotuner status`` (exit 3) and the site's
condition view, dropped by the next status the study writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.results import ResultsStore
from reconciler.status import build_status, degraded
from reports.render import condition


def _running(name: str) -> object:
    return build_status(name=name, phase="running", message="1/4 experiments", old=None)


def test_degraded_keeps_the_rest_and_stops_saying_progressing() -> None:
    old = _running("a")
    st = degraded(old, "a", "StudyCrashed", "the study crashed (ValueError: x)", "2026-01-01T00:00:30+00:00")
    kinds = {c.type: c for c in st.conditions}
    assert kinds["Degraded"].status == "True" and kinds["Degraded"].next_retry_time
    assert kinds["Reconciling"].status == "False" and kinds["Reconciling"].reason == "StudyCrashed"
    assert st.counts == old.counts  # type: ignore[attr-defined]
    data = st.dump()
    assert next(c for c in data["conditions"] if c["type"] == "Degraded")["nextRetryTime"]
    # other conditions carry no nextRetryTime key at all (old files keep their bytes)
    assert all("nextRetryTime" not in c for c in data["conditions"] if c["type"] != "Degraded")
    view = condition(st)
    assert view.label == "Degraded" and "Next retry" in view.message
    # the study's next status (built from its progress) has no Degraded condition
    again = build_status(name="a", phase="running", message="2/4 experiments", old=st)
    assert again.condition("Degraded") is None


@pytest.mark.parametrize(
    ("phase", "degrade", "code"), [("running", False, 0), ("running", True, 3), ("stalled", False, 3)]
)
def test_status_exits_non_zero_on_stalled_or_degraded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], phase: str, degrade: bool, code: int
) -> None:
    store = ResultsStore(tmp_path, "a")
    store.ensure()
    st = build_status(name="a", phase=phase, message="m", old=None)  # type: ignore[arg-type]
    if degrade:
        st = degraded(st, "a", "CommitBackFailing", "push refused", "2026-01-01T00:00:30+00:00")
    store.write_status(st)
    assert main(["status", "--results", str(tmp_path)]) == code
    out = capsys.readouterr().out
    if degrade:
        assert "Degraded" in out and "push refused (next retry 2026-01-01T00:00:30+00:00)" in out
    assert main(["status", "--results", str(tmp_path), "--json"]) == code
    shown = json.loads(capsys.readouterr().out)
    assert shown[0]["state"] == {"stalled": "Stalled"}.get(phase, "Degraded" if degrade else "Reconciling")
