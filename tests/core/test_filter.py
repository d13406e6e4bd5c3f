"""The search query language and error fingerprints: pure, so tested without storage."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hyperqueue as hq

NOW = 1_700_000_000.0
_PIECES = [
    "status:failed,pending",
    "queue:q",
    "task:a*b",
    "tenant:t",
    'error:"x y"',
    "since:2h",
    "until:2024-01-01T00:00",
    "fingerprint:abcd",
    "word",
    '"two words"',
    "a:b",
    "1:x",
    ":",
    "status:",
    '"',
    "since:999999999999d",
    "task:*",
    "\\",
    "'q'",
]


def parse(text: str) -> hq.JobFilter:
    return hq.JobFilter.parse(text, now=NOW)


def test_every_qualifier_parses() -> None:
    where = parse(
        'status:failed,CANCELLED queue:email task:send_* tenant:acme error:"Timed out" '
        "since:2h until:30m fingerprint:AB12cd34 smtp relay"
    )
    assert where == hq.JobFilter(
        status=(hq.JobStatus.FAILED, hq.JobStatus.CANCELLED),
        queue="email",
        task="send_*",
        tenant="acme",
        error="Timed out",
        since=NOW - 7200,
        until=NOW - 1800,
        fingerprint="ab12cd34",
        words=("smtp", "relay"),
    )
    assert parse("") == hq.JobFilter() and parse("").empty


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("colour:red", "unknown qualifier 'colour' (known: status, queue, task, tenant,"),
        ("status:lost", "'lost' is not a job status"),
        ("since:yesterday", "since:yesterday is neither a duration"),
        ("queue:a queue:b", "qualifier 'queue' is given twice"),
        ("queue:", "qualifier 'queue' needs a value"),
        ('error:"open', "bad query"),
        ("fingerprint:xyz", "is not a hex fingerprint"),
    ],
)
def test_bad_queries_raise_a_filter_error_saying_why(text: str, why: str) -> None:
    with pytest.raises(hq.FilterError) as caught:
        parse(text)
    assert str(caught.value).startswith(why) or why in str(caught.value)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, hq.OptionError)
    assert caught.value.option == "q"


def test_times_accept_iso_8601_naive_as_utc() -> None:
    assert parse("since:2023-11-14T22:13:20").since == NOW
    assert parse("until:2023-11-14T23:13:20+01:00").until == NOW
    assert parse("since:1.5m").since == NOW - 90


def test_to_query_round_trips_and_the_struct_encodes() -> None:
    where = parse('status:pending task:"a b*" error:"say \\"hi\\"" since:1d word')
    assert parse(where.to_query()) == where
    assert msgspec.json.decode(msgspec.json.encode(where), type=hq.JobFilter) == where


def test_matches_is_the_reference() -> None:
    job = hq.Job(
        id="1",
        task="send_mail",
        queue="email",
        tenant="acme",
        status=hq.JobStatus.FAILED,
        error="TimeoutError: SMTP relay timed out",
        created_at=NOW - 60,
    )
    assert parse("task:send_* queue:email tenant:acme status:failed since:5m").matches(job)
    assert parse("task:*MAIL").matches(job) is False  # a task glob is case-sensitive
    assert parse("MAIL smtp").matches(job)  # bare words are not
    assert parse('error:"relay TIMED"').matches(job)
    assert not parse("until:5m").matches(job)
    assert not parse("task:send").matches(job)
    assert parse(f"fingerprint:{hq.fingerprint(job.task, job.error)}").matches(job)


def test_narrowed_ands_conditions_or_says_nothing_can_pass() -> None:
    where = parse("status:failed,cancelled task:send_*")
    assert where.narrowed(status=["failed", "pending"]) == parse("status:failed task:send_*")
    assert where.narrowed(status=[hq.JobStatus.PENDING]) is None
    assert where.narrowed(task="send_sms") == parse("status:failed,cancelled task:send_sms")
    assert where.narrowed(task="resize") is None
    assert parse("tenant:a").narrowed(tenant="b") is None
    assert parse("").narrowed(tenant="b") == hq.JobFilter(tenant="b")


def test_like_patterns_escape_sql_wildcards() -> None:
    assert parse("task:send_%*").task_like() == "send\\_\\%%"
    assert parse("task:exact").task_like() is None
    assert hq.JobFilter.contains_like("50%_off") == "%50\\%\\_off%"


def test_fingerprints_group_occurrences_of_one_failure() -> None:
    same = [
        "TimeoutError: Timeout after 3.2s for id 123",
        "TimeoutError: Timeout after 4.1s for id 456\nTraceback (most recent call last): ...",
        "TimeoutError: Timeout after 9s for id 0x7f3a",
    ]
    assert len({hq.fingerprint("fetch", e) for e in same}) == 1
    assert hq.fingerprint("fetch", "KeyError: 'user'") == hq.fingerprint("fetch", "KeyError: 'x'")
    assert hq.fingerprint("fetch", "KeyError: 'user'") != hq.fingerprint("parse", "KeyError: 'u'")
    assert hq.fingerprint("a", "ValueError: x") != hq.fingerprint("a", "TypeError: x")
    ids = "job 0190a2b4-7c1d-7e2f-8a3b-4c5d6e7f8a9b on 5f3a9c1e22 failed"
    assert hq.fingerprint("a", ids) == hq.fingerprint("a", ids.replace("5f3a", "6e4b"))
    assert len(hq.fingerprint("a", None)) == 12


def test_error_groups_describe_the_newest_occurrence() -> None:
    jobs = [
        hq.Job(
            id=str(i),
            task="fetch",
            status=hq.JobStatus.FAILED,
            finished_at=NOW + i,
            error=f"TimeoutError: Timeout after {i}s",
        )
        for i in range(3)
    ]
    [group] = hq.ErrorGroup.fold([*jobs, hq.Job(id="9", task="fetch")], limit=10)
    assert group == hq.ErrorGroup(
        fingerprint=hq.fingerprint("fetch", "TimeoutError: Timeout after 1s"),
        task="fetch",
        error_type="TimeoutError",
        message="Timeout after #s",
        count=3,
        first_at=NOW,
        last_at=NOW + 2,
        sample_job_id="2",
    )


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80) | st.lists(st.sampled_from(_PIECES), max_size=6).map(" ".join))
def test_any_text_is_a_filter_or_a_filter_error(text: str) -> None:
    try:
        where = parse(text)
    except hq.FilterError:
        return
    again = parse(where.to_query())
    if where.since is None and where.until is None:
        assert again == where
    else:  # times are written to the microsecond
        assert abs((again.since or 0) - (where.since or 0)) < 1e-3
        assert abs((again.until or 0) - (where.until or 0)) < 1e-3
