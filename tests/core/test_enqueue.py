"""Enqueueing: argument checks against the task signature, options, idempotency."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest

import hyperqueue as hq
from hyperqueue.testing import FakeClock

pytestmark = pytest.mark.anyio


class Point(msgspec.Struct):
    x: int
    y: int


def register(queue: hq.Queue) -> dict[str, hq.Task[Any, Any]]:
    @queue.task
    async def add(a: int, b: int = 2) -> int:
        return a + b

    @queue.task(name="shapes.move", queue="geo", priority="high", timeout=5.0)
    async def move(p: Point, when: dt.datetime, *, scale: float = 1.0) -> dict[str, Any]:
        return {"x": p.x * scale, "when": when.isoformat()}

    @queue.task
    async def anything(*args: int, **kwargs: str) -> None:
        return None

    return {"add": add, "move": move, "anything": anything}


async def test_enqueue_returns_a_pending_job_with_task_defaults(queue: hq.Queue) -> None:
    tasks = register(queue)
    job = await tasks["move"].enqueue(Point(1, 2), dt.datetime(2026, 1, 1), scale=2.0)
    assert job.status is hq.JobStatus.PENDING
    assert job.task == "shapes.move" and job.queue == "geo"
    assert job.priority is hq.Priority.HIGH and job.timeout == 5.0
    # stored in the JSON-like form every backend keeps
    assert job.args == ({"x": 1, "y": 2}, "2026-01-01T00:00:00")
    assert job.kwargs == {"scale": 2.0}
    assert await queue.get(job.id) == job


async def test_enqueue_by_name_matches_enqueue_by_task(queue: hq.Queue) -> None:
    register(queue)
    job = await queue.enqueue("add", args=[1], kwargs={"b": 5}, priority="low")
    assert (job.task, job.args, job.kwargs, job.priority) == ("add", (1,), {"b": 5}, "low")


@pytest.mark.parametrize(
    ("args", "kwargs", "argument", "fragment"),
    [
        ((1, "x"), {}, "b", "Expected `int`, got `str`"),
        ((), {}, "a", "missing required field"),
        ((1, 2, 3), {}, None, "takes 2 positional arguments but 3 were given"),
        ((1,), {"c": 1}, "c", "unexpected keyword argument"),
        ((1,), {"a": 1}, "a", "multiple values"),
        ((object(),), {}, None, "serializable"),
    ],
)
async def test_bad_arguments_name_the_task_and_argument(
    queue: hq.Queue,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    argument: str | None,
    fragment: str,
) -> None:
    tasks = register(queue)
    with pytest.raises(hq.ArgumentError) as caught:
        await tasks["add"].enqueue(*args, **kwargs)
    assert caught.value.task == "add"
    assert caught.value.argument == argument
    assert fragment in str(caught.value) and "'add'" in str(caught.value)
    assert (await queue.stats()) == {}, "nothing was stored"


async def test_nested_struct_errors_point_at_the_argument(queue: hq.Queue) -> None:
    register(queue)
    with pytest.raises(hq.ArgumentError) as caught:
        await queue.enqueue("shapes.move", args=[{"x": 1, "y": "no"}, "2026-01-01T00:00:00"])
    assert caught.value.argument == "p"
    with pytest.raises(hq.ArgumentError) as caught:
        await queue.enqueue("shapes.move", args=[{"x": 1, "y": 1}, "not a date"])
    assert caught.value.argument == "when"


async def test_var_args_are_checked_by_their_annotation(queue: hq.Queue) -> None:
    register(queue)
    await queue.enqueue("anything", args=[1, 2, 3], kwargs={"k": "v"})
    with pytest.raises(hq.ArgumentError):
        await queue.enqueue("anything", args=[1, "two"])
    with pytest.raises(hq.ArgumentError):
        await queue.enqueue("anything", kwargs={"k": 1})


async def test_unknown_task_is_a_typed_error_naming_it(queue: hq.Queue) -> None:
    register(queue)
    with pytest.raises(hq.UnknownTask, match=r"'nope'.*registered tasks: add"):
        await queue.enqueue("nope")


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"priority": "urgent"}, "priority"),
        ({"delay": -1.0}, "delay"),
        ({"delay": float("nan")}, "delay"),
        ({"delay": "5"}, "delay"),
        ({"timeout": 0}, "timeout"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 10**20}, "max_attempts"),
        ({"key": ""}, "key"),
        ({"key": "k" * 300}, "key"),
        ({"queue": ""}, "queue"),
        ({"delay": 1.0, "run_at": 5.0}, "delay"),
    ],
)
async def test_bad_options_are_refused(
    queue: hq.Queue, options: dict[str, Any], option: str
) -> None:
    register(queue)
    with pytest.raises(hq.OptionError) as caught:
        await queue.enqueue("add", args=[1], **options)
    assert caught.value.option == option


async def test_delay_and_run_at_set_the_run_time(queue: hq.Queue, clock: FakeClock) -> None:
    tasks = register(queue)
    delayed = await tasks["add"].options(delay=5.0).enqueue(1)
    assert delayed.run_at == clock.now() + 5.0
    at = await tasks["add"].options(run_at=clock.now() + 60).enqueue(1)
    assert at.run_at == clock.now() + 60
    past = await tasks["add"].options(run_at=clock.now() - 60).enqueue(1)
    assert past.run_at == clock.now()


async def test_same_key_enqueues_once_until_the_key_expires(clock: FakeClock) -> None:
    queue = hq.Queue(clock=clock, key_ttl=60.0)
    tasks = register(queue)
    first = await tasks["add"].options(key="order-7").enqueue(1)
    again = await tasks["add"].options(key="order-7").enqueue(2)
    assert again == first
    await clock.advance(61)
    later = await tasks["add"].options(key="order-7").enqueue(3)
    assert later.id != first.id


async def test_options_does_not_leak_into_plain_enqueue(queue: hq.Queue) -> None:
    tasks = register(queue)
    await tasks["add"].options(priority="critical", tenant="acme").enqueue(1)
    plain = await tasks["add"].enqueue(1)
    assert plain.priority is hq.Priority.NORMAL and plain.tenant is None


async def test_enqueue_many_checks_everything_before_storing(queue: hq.Queue) -> None:
    register(queue)
    good = hq.Submission(task="add", args=(1,))
    with pytest.raises(hq.ArgumentError):
        await queue.enqueue_many([good, hq.Submission(task="add", args=("x",))])
    assert await queue.stats() == {}
    results = await queue.enqueue_many([good, hq.Submission(task="add", args=(2,), queue="q2")])
    assert [r.job.queue for r in results] == ["default", "q2"]
    assert [r.created for r in results] == [True, True]


async def test_enqueue_many_tells_created_jobs_from_ones_a_key_found(queue: hq.Queue) -> None:
    register(queue)
    first = await queue.enqueue("add", args=[1], key="k")
    results = await queue.enqueue_many(
        [hq.Submission(task="add", args=(1,), key="k"), hq.Submission(task="add", args=(2,))]
    )
    assert [r.created for r in results] == [False, True]
    assert results[0].job.id == first.id


async def test_build_checks_and_makes_jobs_without_storing_them(queue: hq.Queue) -> None:
    register(queue)
    queue.template("later", delay=30, priority="low")
    jobs = queue.build(
        [
            hq.Submission(task="add", args=(1,), key="k", tenant="acme"),
            hq.Submission(
                task="shapes.move",
                kwargs={"p": {"x": 1, "y": 2}, "when": "2024-01-01T00:00:00"},
                template="later",
            ),
        ]
    )
    now = queue.clock.now()
    assert [j.task for j in jobs] == ["add", "shapes.move"]
    assert jobs[0].args == (1,) and jobs[0].key == "k" and jobs[0].tenant == "acme"
    assert jobs[1].queue == "geo" and jobs[1].priority is hq.Priority.LOW
    assert jobs[1].run_at == now + 30 and all(j.created_at == now for j in jobs)
    assert all(j.status is hq.JobStatus.PENDING for j in jobs) and jobs[0].id != jobs[1].id
    assert await queue.stats() == {}  # nothing stored
    with pytest.raises(hq.ArgumentError):
        queue.build([hq.Submission(task="add", args=("x",))])
    with pytest.raises(hq.UnknownTask):
        queue.build([hq.Submission(task="nope")])
    assert queue.build([]) == []


async def test_registering_a_name_twice_is_an_error(queue: hq.Queue) -> None:
    register(queue)
    with pytest.raises(ValueError, match="already registered"):

        @queue.task(name="add")
        async def other() -> None: ...


async def test_a_task_can_still_be_called_directly(queue: hq.Queue) -> None:
    tasks = register(queue)
    assert await tasks["add"](1, b=4) == 5


async def test_get_unknown_job_raises(queue: hq.Queue) -> None:
    with pytest.raises(hq.JobNotFound) as caught:
        await queue.get("missing")
    assert caught.value.job_id == "missing"
    assert isinstance(caught.value, LookupError)
