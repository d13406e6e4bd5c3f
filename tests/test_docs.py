"""The examples in the README and the docs run as written.

Every ```python block of README.md and of every page under docs/ is collected (the
files are discovered, not listed), and the info string says what the block is:

- ```python: a complete program. It runs in a fresh interpreter, in an empty folder,
  and must exit with status 0. A comment after a ``print(...)`` call says what it
  prints: ``print(job.status)  # pending`` checks that ``pending`` is in the output.
- ```python fragment: part of an explanation, not a program (it uses names the page
  introduced around it, or stands for code of the reader's own). It is compiled (top-level
  ``await`` allowed), its imports of hyperqueue's packages run, and every ``hq.NAME``
  it uses must exist: a fragment cannot name an API that is gone.
- A ```toml block whose first line is ``# NAME.toml`` is a file the page's programs
  read: it is written into their folder before they run (so a configuration example
  must load).
- A program whose first line is ``# NAME.py: ...`` is one file of a set-up of several
  processes (the tutorial's server and worker on one SQLite file). Such files are
  written by name and run together, as real processes, by a test of their own below;
  :func:`test_every_named_file_has_a_test` fails for a named file that no test runs.

A block that cannot run here (it needs a service this machine has not) is a fragment,
and the page says why next to it. Blocks that need an extra that is not installed
(apsw, litestar, cronsim) are skipped with that reason; ``tox -e full`` installs them all.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```python( fragment)?\n(.*?)^```", re.DOTALL | re.MULTILINE)
DATA_FILE = re.compile(r"^```toml\n# ([\w.-]+\.toml)\n(.*?)^```", re.DOTALL | re.MULTILINE)
NAMED = re.compile(r"# (\w+\.py): ")
EXTRAS = {  # a block that uses the key needs the module of the value
    "hyperqueue_sqlite": "apsw",
    "hyperqueue_litestar": "litestar",
    "hyperqueue_cli": "click",
    "httpx": "httpx",
    'cron="': "cronsim",
    "opentelemetry.sdk": "opentelemetry.sdk",
    "hyperqueue_otel": "opentelemetry.sdk",
}
SET_UPS = {"docs/tutorial.md": {"tasks.py", "submit.py", "worker.py"}}


@dataclass(frozen=True)
class Block:
    page: str
    number: int
    code: str
    fragment: bool

    @property
    def id(self) -> str:
        return f"{self.page}#{self.number}"

    @property
    def file(self) -> str | None:
        match = NAMED.match(self.code)
        return match.group(1) if match else None


def pages() -> list[Path]:
    found = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [p for p in found if "_build" not in p.parts]


def all_blocks() -> Iterator[Block]:
    for path in pages():
        page = path.relative_to(ROOT).as_posix()
        for n, match in enumerate(BLOCK.finditer(path.read_text()), start=1):
            yield Block(page, n, match.group(2), fragment=bool(match.group(1)))


def needs_extras(code: str) -> None:
    for marker, module in EXTRAS.items():
        if marker in code:
            pytest.importorskip(module, reason=f"needs {module} (an extra)")


def params(*, fragment: bool) -> list[Any]:
    return [
        pytest.param(b, id=b.id)
        for b in all_blocks()
        if b.fragment == fragment and (fragment or b.file is None)
    ]


def test_the_pages_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in pages()}
    assert {"README.md", "docs/tutorial.md", "docs/guides/jobs.md"} <= names
    assert len(params(fragment=False)) >= 25


@pytest.mark.parametrize("block", params(fragment=False))
def test_program_runs(block: Block, tmp_path: Path) -> None:
    needs_extras(block.code)
    for name, text in DATA_FILE.findall((ROOT / block.page).read_text()):
        (tmp_path / name).write_text(f"# {name}\n{text}")  # the page's own configuration
    script = tmp_path / "example.py"
    script.write_text(block.code)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    check_printed(block.code, done.stdout)


def check_printed(code: str, stdout: str) -> None:
    """The comments after print() calls say what the example prints (``...`` stands for
    anything: ``# ... 30 s``)."""
    for expected in re.findall(r"print\(.*\)\s+# (.+)", code):
        for part in expected.split("..."):
            assert part.strip() in stdout, (expected, stdout)


@pytest.mark.parametrize("block", params(fragment=True))
def test_fragment_compiles_and_names_what_exists(block: Block) -> None:
    needs_extras(block.code)
    tree = compile(
        block.code, block.id, "exec", flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    )
    import hyperqueue as hq
    import hyperqueue.testing  # fragments name hq.testing

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hyperqueue"):
            module = importlib.import_module(node.module or "")
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hyperqueue"):
                    importlib.import_module(alias.name)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "hq"
        ):
            assert hasattr(hq, node.attr), f"hyperqueue has no {node.attr}"


def test_every_named_file_has_a_test() -> None:
    named = {(b.page, b.file) for b in all_blocks() if b.file and not b.fragment}
    tested = {(page, name) for page, names in SET_UPS.items() for name in names}
    assert named == tested


def tutorial_files(folder: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for block in all_blocks():
        if block.page == "docs/tutorial.md" and (name := block.file):
            files[name] = block.code
            (folder / name).write_text(block.code)
    return files


def tutorial_commands() -> dict[str, list[str]]:
    """The tutorial's ``hyperqueue serve`` and ``hyperqueue worker`` lines, as argv."""
    text = (ROOT / "docs/tutorial.md").read_text()
    commands = {}
    for line in re.findall(r"^hyperqueue (?:serve|worker) .*$", text, re.MULTILINE):
        argv = line.split("#")[0].split()
        commands[argv[1]] = [sys.executable, "-m", "hyperqueue_cli", *argv[1:]]
    return commands


def read_until(stream: Any, needle: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        line = stream.readline()
        if needle in line or not line:
            return str(line)
    return ""


def wait_for_line(log: Path, needle: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if needle in line:
                return line
        time.sleep(0.05)
    return log.read_text()


async def live_pools(db: Path, want: int, timeout: float) -> int:
    import anyio

    import hyperqueue as hq
    from hyperqueue_sqlite import SQLiteStorage

    async with hq.Queue(SQLiteStorage(db)) as queue:
        with anyio.move_on_after(timeout):
            while len(await queue.workers()) < want:  # noqa: ASYNC110 - other processes
                await anyio.sleep(0.05)
        return len(await queue.workers())


def test_tutorial_serve_and_worker_share_one_file(tmp_path: Path) -> None:
    """Section 5 as written: ``hyperqueue serve`` and ``hyperqueue worker`` on jobs.db,
    eight jobs submitted over HTTP, both processes run some, both drain on SIGTERM."""
    pytest.importorskip("litestar", reason="needs the server extra")
    import anyio

    files = tutorial_files(tmp_path)
    commands = tutorial_commands()
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("HYPERQUEUE_")}
    deadline = time.monotonic() + 60
    logs = {name: tmp_path / f"{name}.log" for name in ("serve", "worker")}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        with logs["serve"].open("w") as log:
            procs["serve"] = subprocess.Popen(
                [*commands["serve"], "--port", "0"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        line = wait_for_line(logs["serve"], "hyperqueue serving on", deadline)
        url = re.search(r"http://\S+", line)
        assert url, line
        with logs["worker"].open("w") as log:
            procs["worker"] = subprocess.Popen(
                commands["worker"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log
            )
        assert anyio.run(live_pools, tmp_path / "jobs.db", 2, 30.0) == 2  # both pools run
        done = subprocess.run(
            [sys.executable, "submit.py"],
            cwd=tmp_path,
            env={**env, "HYPERQUEUE_URL": url.group(0)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        check_printed(files["submit.py"], done.stdout)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {name: proc.wait(timeout=30) for name, proc in procs.items()}
    assert codes == {"serve": 0, "worker": 0}, {n: log.read_text() for n, log in logs.items()}


def test_tutorial_worker_drains_on_sigterm(tmp_path: Path) -> None:
    """worker.py runs until SIGTERM, then lets the running job finish and exits 0."""
    pytest.importorskip("apsw", reason="needs the sqlite extra")
    tutorial_files(tmp_path)
    tasks = tmp_path / "tasks.py"
    tasks.write_text(tasks.read_text().replace("anyio.sleep(0.2)", "anyio.sleep(1.0)"))
    producer = tmp_path / "producer.py"
    producer.write_text(
        "import sys\n"
        "import anyio\n"
        "from tasks import queue, thumbnail\n\n"
        "async def main() -> None:\n"
        "    async with queue:\n"
        "        job = await thumbnail.enqueue('a.jpg')\n"
        "        while (await queue.get(job.id)).status != 'running':\n"
        "            await anyio.sleep(0.005)\n"
        "        print('running', flush=True)\n"
        "        sys.stdin.readline()\n"
        "        print((await queue.wait(job.id, timeout=30)).status, flush=True)\n\n"
        "anyio.run(main)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    worker = subprocess.Popen(
        [sys.executable, "worker.py"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    job = subprocess.Popen(
        [sys.executable, "producer.py"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert job.stdout is not None and job.stdin is not None
    assert read_until(job.stdout, "running", time.monotonic() + 30).strip() == "running"
    worker.send_signal(signal.SIGTERM)  # while the job runs: the drain lets it finish
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    out, _ = job.communicate("\n", timeout=30)
    assert out.strip() == "completed"
