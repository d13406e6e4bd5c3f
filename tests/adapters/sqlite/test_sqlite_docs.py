"""The SQLite guide's first example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).parents[3] / "docs" / "guides" / "sqlite.md"


def test_the_guide_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    example = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(example, str(GUIDE), "exec"), {"__name__": "guide"})
    assert "status=<JobStatus.COMPLETED" in capsys.readouterr().out
    assert (tmp_path / "jobs.db").exists()
