"""Configuration costs: validating a document, and one hot-reload poll of an unchanged file.

parse_config (deep copy + env layer + msgspec.convert with per-tenant checks) is compared
with a bare msgspec.convert of the same document (the ceiling); ConfigWatcher.check() on an
unchanged file with a bare os.stat() (what one poll must at least do). Median of 5 repeats.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import anyio
import msgspec

from hyperqueue_litestar._config import (
    Config,
    ConfigWatcher,
    TenantQuota,
    dump_config,
    parse_config,
)


def per_call(fn: object, n: int) -> float:
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()  # type: ignore[operator]
        runs.append((time.perf_counter() - start) / n)
    return statistics.median(runs)


async def main() -> None:
    tenants = {f"t{i}": TenantQuota(max_running=i + 1) for i in range(20)}
    document = msgspec.to_builtins(Config(tenants=tenants))
    n = 2000
    ceiling = per_call(lambda: msgspec.convert(document, Config, strict=False), n)
    ours = per_call(lambda: parse_config(document, env={}), n)
    print(
        f"validate: msgspec.convert {ceiling * 1e6:.1f} us, parse_config {ours * 1e6:.1f} us, "
        f"ratio {ours / ceiling:.2f}"
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "hq.toml"
        path.write_text(dump_config(Config()))
        async with ConfigWatcher(path, env={}, interval=3600) as watcher:
            runs_w, runs_s = [], []
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(n):
                    await watcher.check()
                runs_w.append((time.perf_counter() - start) / n)
                start = time.perf_counter()
                for _ in range(n):
                    os.stat(path)
                runs_s.append((time.perf_counter() - start) / n)
            w, s = statistics.median(runs_w), statistics.median(runs_s)
            print(
                f"poll, unchanged file: os.stat {s * 1e6:.2f} us, check() {w * 1e6:.2f} us, "
                f"ratio {w / s:.2f}"
            )


if __name__ == "__main__":
    anyio.run(main)
