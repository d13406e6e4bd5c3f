"""The examples in the README and the docs run as written.

Each ```python block of the listed files is a complete program, run in a fresh
interpreter. A block whose first line is ``# worker.py`` runs until a signal: it is run
as a process, sent SIGTERM, and must drain and exit with status 0.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = [
    "README.md",
    "docs/tutorial.md",
    "docs/guides/testing.md",
    "docs/guides/server.md",
    "docs/guides/periodic.md",
    "docs/guides/workflows.md",
]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def blocks() -> list[pytest.param]:  # type: ignore[valid-type]
    found = []
    for name in FILES:
        for n, code in enumerate(BLOCK.findall((ROOT / name).read_text())):
            if "from mybackend import" in code:  # a template for the reader's own backend
                continue
            if code.startswith("# worker.py"):  # test_worker_example_drains_on_sigterm
                continue
            found.append(pytest.param(code, id=f"{name}#{n + 1}"))
    return found


@pytest.mark.parametrize("code", blocks())
def test_example_runs(code: str, tmp_path: Path) -> None:
    if "hyperqueue_sqlite" in code:
        pytest.importorskip("apsw", reason="needs the sqlite extra")
    if "hyperqueue_litestar" in code:
        pytest.importorskip("litestar", reason="needs the server extra")
    script = tmp_path / "example.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    # the comments after print() calls say what the example prints
    for expected in re.findall(r"print\(.*\)\s+# (.+)", code):
        assert expected.strip() in done.stdout, (expected, done.stdout)


def test_worker_example_drains_on_sigterm(tmp_path: Path) -> None:
    [code] = [
        c
        for c in BLOCK.findall((ROOT / "docs/tutorial.md").read_text())
        if c.startswith("# worker.py")
    ]
    code = code.replace(
        "@queue.task\nasync def work",
        "queue.events.subscribe(lambda e: print(type(e).__name__, flush=True))\n\n\n"
        "@queue.task\nasync def work",
    )
    code = code.replace(
        "    return n * n",
        "    await anyio.sleep(0.5)  # still running at SIGTERM\n    return n * n",
    )
    code = code.replace(
        "    anyio.run(hq.run_worker, queue)",
        "    async def main() -> None:\n"
        "        async with anyio.create_task_group() as tg:\n"
        "            tg.start_soon(hq.run_worker, queue)\n"
        "            await work.enqueue(7)\n"
        "    anyio.run(main)\n"
        "    print('drained', flush=True)",
    )
    script = tmp_path / "worker.py"
    script.write_text(code)
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    lines: list[str] = []
    while "JobStarted" not in lines and time.monotonic() < deadline:
        lines.append(proc.stdout.readline().strip())
    proc.send_signal(signal.SIGTERM)  # while the job runs: the drain lets it finish
    out, err = proc.communicate(timeout=30)
    lines += out.split()
    assert proc.returncode == 0, err
    assert lines[-2:] == ["JobCompleted", "drained"]
