"""Workflows and batches through the queue: building, checking, running, cancel, retry."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hyperqueue as hq
from hyperqueue.testing import FakeClock

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def guard(seconds: float = 10.0) -> AsyncIterator[None]:
    with anyio.fail_after(seconds):
        yield


def etl(queue: hq.Queue) -> dict[str, hq.Task]:  # type: ignore[type-arg]
    @queue.task
    async def extract(url: str) -> list[int]:
        return [1, 2, 3]

    @queue.task
    async def transform(rows: list[int], factor: int = 2) -> list[int]:
        return [r * factor for r in rows]

    @queue.task
    async def load(rows: list[int]) -> int:
        return sum(rows)

    @queue.task
    async def audit() -> str:
        return "ok"

    return {"extract": extract, "transform": transform, "load": load, "audit": audit}


async def test_results_flow_to_dependents_and_the_sink_is_the_result(queue: hq.Queue) -> None:
    t = etl(queue)
    flow = hq.Workflow()
    raw = flow.add(t["extract"], "s3://bucket/x")
    checked = flow.add(t["audit"])
    clean = flow.add(t["transform"], raw, factor=3)
    flow.add(t["load"], clean, after=[checked])
    run = await queue.enqueue_workflow(flow)
    assert run.status is hq.WorkflowStatus.PENDING
    assert list(run.steps) == ["extract", "audit", "transform", "load"]
    async with guard(), queue.worker():
        done = await queue.wait_workflow(run.id)
    assert done.status is hq.WorkflowStatus.COMPLETED
    assert done.result == {"load": 18}
    jobs = await queue.workflow_jobs(run.id)
    load = jobs["load"]
    assert load.step is not None and load.started_at is not None
    # the dependent started only after each of its parents finished
    for parent in ("transform", "audit"):
        assert jobs[parent].finished_at is not None
        assert load.started_at >= jobs[parent].finished_at


async def test_a_second_step_of_a_task_gets_a_suffix_and_names_are_unique(
    queue: hq.Queue,
) -> None:
    t = etl(queue)
    flow = hq.Workflow()
    flow.add(t["audit"])
    flow.add(t["audit"])
    flow.add(t["audit"], name="final")
    assert flow.steps == ("audit", "audit-2", "final")
    with pytest.raises(hq.WorkflowError, match="added already"):
        flow.add(t["audit"], name="final")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda f, t: f.add(t["load"], rows="not a list"), "step 'load'.*rows"),
        (lambda f, t: f.add(t["transform"]), "missing required argument `rows`"),
        (lambda f, t: f.add(t["load"], after=["nowhere"]), "unknown step 'nowhere'"),
        (lambda f, t: f.add("no_such_task"), "no_such_task"),
        (lambda f, t: f.add(t["audit"], on_parent_failure="maybe"), "on_parent_failure"),
        (lambda f, t: f.add(t["load"], unknown=1), "unexpected keyword"),
    ],
)
async def test_a_bad_workflow_is_refused_whole_when_enqueued(
    queue: hq.Queue, build: object, message: str
) -> None:
    t = etl(queue)
    flow = hq.Workflow()
    flow.add(t["audit"])

    async def attempt() -> None:
        build(flow, t)  # type: ignore[operator]
        await queue.enqueue_workflow(flow)

    with pytest.raises((hq.WorkflowError, hq.UnknownTask), match=message):
        await attempt()
    assert (await queue.list_jobs()).items == [], "nothing is stored"


@pytest.mark.parametrize("concurrency", [0, -1, 2**63, True, 1.5])
def test_a_concurrency_outside_1_to_2_63_is_refused(concurrency: object) -> None:
    with pytest.raises(hq.WorkflowError, match="concurrency must be a whole number"):
        hq.Workflow(concurrency=concurrency)  # type: ignore[arg-type]
    assert hq.Workflow(concurrency=2**63 - 1).concurrency == 2**63 - 1


async def test_a_cycle_is_refused(queue: hq.Queue) -> None:
    t = etl(queue)
    flow = hq.Workflow()
    flow.add(t["transform"], name="a", inputs={"rows": "b"})
    flow.add(t["transform"], name="b", inputs={"rows": "a"})
    with pytest.raises(hq.WorkflowError, match="cycle"):
        await queue.enqueue_workflow(flow)
    assert await queue.list_jobs() == hq.Page(items=[])


async def test_a_parent_result_that_does_not_fit_fails_the_step_clearly(
    queue: hq.Queue,
) -> None:
    @queue.task(retry=hq.Retry(5))
    async def count(n: int) -> int:
        return n

    @queue.task
    async def words() -> str:
        return "not a number"

    flow = hq.Workflow()
    flow.add(count, flow.add(words))
    run = await queue.enqueue_workflow(flow)
    async with guard(), queue.worker():
        done = await queue.wait_workflow(run.id)
    assert done.status is hq.WorkflowStatus.FAILED
    step = (await queue.workflow_jobs(run.id))["count"]
    assert step.attempts == 1, "a result that does not fit is not retried"
    assert step.error is not None
    assert "the result of step 'words'" in step.error and "Expected `int`" in step.error
    assert done.error == f"step 'count' failed: {step.error}"


async def test_a_failure_cancels_dependents_but_a_join_runs_anyway(queue: hq.Queue) -> None:
    ran: list[str] = []

    @queue.task
    async def boom() -> None:
        raise RuntimeError("boom")

    @queue.task
    async def after_boom(value: int | None = None) -> None:
        ran.append("after")

    @queue.task
    async def cleanup(value: int | None) -> str:
        ran.append(f"cleanup got {value}")
        return "cleaned"

    flow = hq.Workflow()
    b = flow.add(boom)
    flow.add(after_boom, after=[b])
    flow.add(cleanup, b, on_parent_failure="run")
    run = await queue.enqueue_workflow(flow)
    async with guard(), queue.worker():
        done = await queue.wait_workflow(run.id)
    assert ran == ["cleanup got None"]
    assert done.statuses == {
        "boom": hq.JobStatus.FAILED,
        "after_boom": hq.JobStatus.CANCELLED,
        "cleanup": hq.JobStatus.COMPLETED,
    }
    assert done.status is hq.WorkflowStatus.FAILED
    assert done.error == "step 'boom' failed: RuntimeError: boom"


async def test_retry_workflow_runs_failed_steps_and_what_follows_only(
    queue: hq.Queue,
) -> None:
    calls: dict[str, int] = {}
    fail = {"flaky": True}

    @queue.task
    async def step(name: str, parent: int | None = None) -> int:
        calls[name] = calls.get(name, 0) + 1
        if fail.get(name):
            raise RuntimeError(f"{name} broke")
        return len(calls)

    flow = hq.Workflow()
    first = flow.add(step, "first", name="first")
    flaky = flow.add(step, "flaky", first, name="flaky")
    flow.add(step, "last", flaky, name="last")
    flow.add(step, "side", name="side")
    run = await queue.enqueue_workflow(flow)
    async with guard(), queue.worker():
        failed = await queue.wait_workflow(run.id)
        assert failed.status is hq.WorkflowStatus.FAILED
        assert failed.statuses["last"] is hq.JobStatus.CANCELLED
        fail["flaky"] = False
        again = await queue.retry_workflow(run.id)
        assert again.status in (hq.WorkflowStatus.PENDING, hq.WorkflowStatus.RUNNING)
        done = await queue.wait_workflow(run.id)
    assert done.status is hq.WorkflowStatus.COMPLETED
    assert calls == {"first": 1, "side": 1, "flaky": 2, "last": 1}
    with pytest.raises(hq.InvalidTransition):
        await queue.retry_workflow(run.id)
    with pytest.raises(hq.WorkflowNotFound):
        await queue.retry_workflow("wf_unknown")


async def test_concurrency_caps_running_steps_of_a_batch(queue: hq.Queue) -> None:
    running = 0
    most = 0

    @queue.task
    async def work(i: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await anyio.sleep(0.001)
        running -= 1
        return i

    batch = hq.Workflow(concurrency=3)
    for i in range(20):
        batch.add(work, i)
    run = await queue.enqueue_workflow(batch)
    async with guard(), queue.worker(concurrency=10):
        done = await queue.wait_workflow(run.id)
    assert done.status is hq.WorkflowStatus.COMPLETED
    assert most == 3
    assert sorted(done.result.values()) == list(range(20))  # type: ignore[union-attr]


async def test_cancel_workflow_stops_a_running_step_and_the_rest(queue: hq.Queue) -> None:
    started = anyio.Event()

    @queue.task
    async def slow() -> None:
        started.set()
        await anyio.sleep_forever()

    @queue.task
    async def never(x: None = None) -> None:
        raise AssertionError("must not run")

    flow = hq.Workflow()
    flow.add(never, flow.add(slow))
    run = await queue.enqueue_workflow(flow)
    async with guard(), queue.worker():
        await started.wait()
        cancelled = await queue.cancel_workflow(run.id)
        assert cancelled.status is hq.WorkflowStatus.CANCELLED
        assert set(cancelled.statuses.values()) == {hq.JobStatus.CANCELLED}
        assert (await queue.wait_workflow(run.id)).status is hq.WorkflowStatus.CANCELLED


async def test_wait_workflow_times_out_on_the_queue_clock(
    queue: hq.Queue, clock: FakeClock
) -> None:
    t = etl(queue)
    flow = hq.Workflow()
    flow.add(t["audit"])
    run = await queue.enqueue_workflow(flow)
    async with guard(), anyio.create_task_group() as tg:

        async def advance() -> None:
            await anyio.wait_all_tasks_blocked()
            await clock.advance(5.0)

        tg.start_soon(advance)
        with pytest.raises(hq.JobTimeout, match="still pending"):
            await queue.wait_workflow(run.id, timeout=5.0)


async def test_step_options_come_from_task_options(queue: hq.Queue) -> None:
    t = etl(queue)
    flow = hq.Workflow()
    flow.add(t["audit"].options(priority="critical", queue="ops", max_attempts=3))
    run = await queue.enqueue_workflow(flow)
    job = (await queue.workflow_jobs(run.id))["audit"]
    assert (job.priority, job.queue, job.max_attempts) == (hq.Priority.CRITICAL, "ops", 3)
    keyed = hq.Workflow()
    keyed.add(t["audit"].options(key="k"))
    with pytest.raises(hq.WorkflowError, match="key"):
        await queue.enqueue_workflow(keyed)


# -- random DAGs: every step runs once, after its parents, or is cancelled exactly when an
# ancestor failed ------------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[list[int]], set[int], set[int], int | None]:
    n = draw(st.integers(1, 12))
    parents = [
        sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else [] for i in range(n)
    ]
    failing = draw(st.sets(st.integers(0, n - 1), max_size=2))
    joins = draw(st.sets(st.integers(0, n - 1), max_size=3))
    concurrency = draw(st.none() | st.integers(1, 3))
    return parents, failing, joins, concurrency


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(dag=dags(), seed=st.integers(0, 2**16))
async def test_random_dags_run_each_step_once_after_its_parents(
    dag: tuple[list[list[int]], set[int], set[int], int | None], seed: int
) -> None:
    parents, failing, joins, concurrency = dag
    queue = hq.Queue()
    order: list[int] = []
    rng = random.Random(seed)

    @queue.task
    async def node(i: int) -> int:
        await anyio.sleep(rng.random() * 0.001)
        order.append(i)
        if i in failing:
            raise RuntimeError(f"node {i} fails")
        return i

    flow = hq.Workflow(concurrency=concurrency)
    handles = []
    for i, ps in enumerate(parents):
        handles.append(
            flow.add(
                node,
                i,
                name=f"n{i}",
                after=[handles[p] for p in ps],
                on_parent_failure="run" if i in joins else "cancel",
            )
        )
    run = await queue.enqueue_workflow(flow)
    async with guard(), queue.worker(concurrency=4):
        done = await queue.wait_workflow(run.id)

    # expected outcome of each node, from the graph alone
    expected: dict[int, hq.JobStatus] = {}
    for i, ps in enumerate(parents):
        blocked = any(expected[p] is not hq.JobStatus.COMPLETED for p in ps)
        if blocked and i not in joins:
            expected[i] = hq.JobStatus.CANCELLED
        else:
            expected[i] = hq.JobStatus.FAILED if i in failing else hq.JobStatus.COMPLETED
    assert done.statuses == {f"n{i}": s for i, s in expected.items()}
    ran = [i for i, s in expected.items() if s is not hq.JobStatus.CANCELLED]
    assert sorted(order) == sorted(ran), "each step that runs runs exactly once"
    position = {i: k for k, i in enumerate(order)}
    for i in ran:
        for p in parents[i]:
            if p in position:
                assert position[p] < position[i], f"n{i} ran before its parent n{p}"
    if all(s is hq.JobStatus.COMPLETED for s in expected.values()):
        assert done.status is hq.WorkflowStatus.COMPLETED
    elif any(s is hq.JobStatus.FAILED for s in expected.values()):
        assert done.status is hq.WorkflowStatus.FAILED
