"""Job search: the filter every backend answers, its query language, and error
fingerprints for the dead-letter groups.

One string serves the URL (``?q=``), the command line and the dashboard::

    status:failed,cancelled queue:email task:send_* tenant:acme error:"Timeout"
    since:1h until:30m fingerprint:ab12cd34ef56 smtp

Terms are separated by spaces and ANDed; a value may be double-quoted. A bare word
matches a job whose task or last error contains it (case-insensitive). ``since`` and
``until`` take a duration back from ``now`` (``90s``, ``15m``, ``2h``, ``7d``) or an
ISO-8601 time, and compare with ``created_at``. Parsing is pure: relative times are
resolved against the ``now`` the caller gives, so a filter is the same on every backend
and a bulk action that runs in batches keeps the window it started with.

A fingerprint names a kind of failure: the task, the error's type and the first line
of its message with the parts that vary from one occurrence to the next (numbers, hex
ids, quoted values) replaced, hashed short. ``Timeout after 3.2s for id 123`` and
``Timeout after 4.1s for id 456`` of one task share it, so thousands of dead letters
read as a few groups.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shlex
from collections.abc import Iterable

import msgspec
from msgspec.structs import replace

from ._errors import OptionError
from ._models import Job, JobStatus

__all__ = [
    "ErrorGroup",
    "FilterError",
    "JobFilter",
    "fingerprint",
]

QUALIFIERS = (
    "status",
    "queue",
    "task",
    "tenant",
    "error",
    "since",
    "until",
    "fingerprint",
)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{4,64}$")
_MAX_QUERY = 2000
_MAX_SPAN = 100 * 365 * 86400.0


class FilterError(OptionError):
    """A search query or filter that cannot work: an unknown qualifier, a bad value.

    An :class:`OptionError` (so a ``ValueError``) on the option ``q``; the server
    answers it with 422."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)
        self.option = "q"


class JobFilter(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Which jobs a search, a count or a bulk action takes: every field given must hold.

    ``status`` any of these (empty: any status); ``queue``, ``tenant`` exact;
    ``task`` an exact name or a glob with ``*``; ``error`` a case-insensitive substring
    of the job's last error; ``since`` / ``until`` bound ``created_at`` (seconds since
    the epoch, ``since <= created_at < until``); ``fingerprint`` the error fingerprint
    of a failed job (:func:`fingerprint`); ``words`` bare words, each found in the task
    or the error (case-insensitive). Build one directly or with :meth:`parse`.
    """

    status: tuple[JobStatus, ...] = ()
    queue: str | None = None
    task: str | None = None
    tenant: str | None = None
    error: str | None = None
    since: float | None = None
    until: float | None = None
    fingerprint: str | None = None
    words: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, *, now: float) -> JobFilter:
        """The filter a query string says; raises :class:`FilterError`."""
        if len(text) > _MAX_QUERY:
            raise FilterError(f"a query has at most {_MAX_QUERY} characters")
        try:
            terms = shlex.split(text, posix=True)
        except ValueError as exc:  # an unclosed quote
            raise FilterError(f"bad query: {exc}") from None
        fields: dict[str, object] = {}
        words: list[str] = []
        for term in terms:
            name, sep, value = term.partition(":")
            if not sep or not name.isidentifier():
                if term:
                    words.append(term)
                continue
            name = name.lower()
            if name not in QUALIFIERS:
                raise FilterError(f"unknown qualifier {name!r} (known: {', '.join(QUALIFIERS)})")
            if name in fields:
                raise FilterError(f"qualifier {name!r} is given twice")
            if not value:
                raise FilterError(f"qualifier {name!r} needs a value")
            fields[name] = _value(name, value, now)
        return cls(words=tuple(words), **fields)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.fingerprint is not None and not _FINGERPRINT.match(self.fingerprint):
            raise FilterError(f"fingerprint {self.fingerprint!r} is not a hex fingerprint")

    @property
    def empty(self) -> bool:
        """True when the filter takes every job."""
        return self == _EVERY

    def matches(self, job: Job) -> bool:
        """Whether ``job`` passes: the reference every backend's query must agree with."""
        if self.status and job.status not in self.status:
            return False
        if self.queue is not None and job.queue != self.queue:
            return False
        if self.tenant is not None and job.tenant != self.tenant:
            return False
        if self.task is not None and not _task_matches(self.task, job.task):
            return False
        if self.since is not None and job.created_at < self.since:
            return False
        if self.until is not None and job.created_at >= self.until:
            return False
        error = (job.error or "").lower()
        if self.error is not None and self.error.lower() not in error:
            return False
        for word in self.words:
            low = word.lower()
            if low not in job.task.lower() and low not in error:
                return False
        if self.fingerprint is not None:
            if job.status is not JobStatus.FAILED:
                return False
            if fingerprint(job.task, job.error) != self.fingerprint:
                return False
        return True

    def narrowed(
        self,
        *,
        status: Iterable[JobStatus | str] | None = None,
        queue: str | None = None,
        task: str | None = None,
        tenant: str | None = None,
    ) -> JobFilter | None:
        """This filter ANDed with more conditions (``task`` an exact name, ``status``
        a set of statuses); ``None`` when no job can pass both."""
        out = self
        if status is not None:
            wanted = {JobStatus(s) for s in status}
            keep = tuple(s for s in (self.status or tuple(JobStatus)) if s in wanted)
            if not keep:
                return None
            out = replace(out, status=keep)
        for name, value in (("queue", queue), ("tenant", tenant)):
            if value is None:
                continue
            mine = getattr(out, name)
            if mine is not None and mine != value:
                return None
            out = replace(out, **{name: value})
        if task is not None:
            if out.task is not None and not _task_matches(out.task, task):
                return None
            out = replace(out, task=task)
        return out

    def for_action(self, action: str) -> JobFilter | None:
        """This filter narrowed to the jobs a bulk ``action`` applies to: ``cancel``
        takes pending and running jobs, ``retry`` failed and cancelled ones, ``discard``
        completed, failed and cancelled ones; ``None`` when no job can pass."""
        statuses = _ACTIONS.get(action)
        if statuses is None:
            raise FilterError(f"unknown bulk action {action!r} (known: {', '.join(_ACTIONS)})")
        return self.narrowed(status=statuses)

    def stored_statuses(self) -> tuple[str, ...]:
        """``status`` as the SQL backends store it: a workflow step that waits for its
        parents is a pending job stored as ``'blocked'``, so pending adds that value."""
        stored = tuple(s.value for s in self.status)
        return (*stored, "blocked") if JobStatus.PENDING in self.status else stored

    def task_like(self, *, escape: str = "\\") -> str | None:
        """``task`` as a SQL ``LIKE`` pattern (``*`` becomes ``%``; ``%``, ``_`` and
        ``escape`` escaped), for a backend that filters in SQL; ``None`` for an exact name
        or no task."""
        if self.task is None or "*" not in self.task:
            return None
        return _like(self.task, escape, glob=True)

    @staticmethod
    def contains_like(text: str, *, escape: str = "\\") -> str:
        """A ``LIKE`` pattern that finds ``text`` anywhere (``error``, bare words)."""
        return "%" + _like(text, escape, glob=False) + "%"

    def to_query(self) -> str:
        """The query string of this filter (times as ISO-8601 UTC)."""
        parts: list[str] = []
        if self.status:
            parts.append("status:" + ",".join(s.value for s in self.status))
        for name in ("queue", "task", "tenant", "error", "fingerprint"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}:{_quote(value)}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                iso = dt.datetime.fromtimestamp(value, dt.UTC).isoformat()
                parts.append(f"{name}:{iso}")
        parts.extend(_quote(w) for w in self.words)
        return " ".join(parts)


_EVERY = JobFilter()
_ACTIONS = {
    "cancel": (JobStatus.PENDING, JobStatus.RUNNING),
    "retry": (JobStatus.FAILED, JobStatus.CANCELLED),
    "discard": (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED),
}


def _quote(value: str) -> str:
    if value and not any(c.isspace() or c in "\"'\\" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value(name: str, value: str, now: float) -> object:
    if name == "status":
        out: list[JobStatus] = []
        for part in value.split(","):
            try:
                status = JobStatus(part.strip().lower())
            except ValueError:
                known = ", ".join(s.value for s in JobStatus)
                raise FilterError(f"{part.strip()!r} is not a job status ({known})") from None
            if status not in out:
                out.append(status)
        return tuple(out)
    if name in ("since", "until"):
        return _time(name, value, now)
    if name == "fingerprint":
        value = value.lower()
    return value


def _time(name: str, value: str, now: float) -> float:
    found = _DURATION.match(value.lower())
    if found is not None:
        seconds = float(found[1]) * _UNITS[found[2]]
        if not seconds <= _MAX_SPAN:
            raise FilterError(f"{name}:{value} reaches back more than 100 years")
        return now - seconds
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise FilterError(
            f"{name}:{value} is neither a duration (30s, 15m, 2h, 7d) nor an ISO-8601 time"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _task_matches(pattern: str, task: str) -> bool:
    if "*" not in pattern:
        return pattern == task
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, task, re.DOTALL) is not None


def _like(text: str, escape: str, *, glob: bool) -> str:
    out: list[str] = []
    for char in text:
        if glob and char == "*":
            out.append("%")
        elif char in ("%", "_", escape):
            out.append(escape + char)
        else:
            out.append(char)
    return "".join(out)


# -- fingerprints ----------------------------------------------------------------------

_TYPE = re.compile(r"^[A-Za-z_][\w.]*$")  # TimeoutError, httpx.ConnectError
_VARYING = re.compile(
    r"""
      "(?:[^"\\]|\\.)*"                                          # "quoted"
    | '(?:[^'\\]|\\.)*'                                          # 'quoted'
    | \b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b  # uuid
    | \b0x[0-9a-f]+\b                                            # 0x1f
    | \b(?=[0-9a-f]*\d)[0-9a-f]{8,}\b                            # long hex ids
    | \d+(?:\.\d+)?                                              # numbers
    """,
    re.VERBOSE | re.IGNORECASE,
)


def split_error(error: str | None) -> tuple[str, str]:
    """A job's error as ``(type, first line of the message)``: the worker stores
    ``"TimeoutError: Timeout after 3.2s"``; an error with no type prefix gives ``""``."""
    if not error:
        return "", ""
    first = error.strip().splitlines()[0].strip() if error.strip() else ""
    head, sep, rest = first.partition(": ")
    if sep and _TYPE.match(head):
        return head, rest.strip()
    return "", first


def normalize_message(message: str) -> str:
    """The message with what varies between occurrences replaced: quoted values by
    ``?``, ids and numbers by ``#``."""

    def sub(found: re.Match[str]) -> str:
        return "?" if found[0][0] in "\"'" else "#"

    return _VARYING.sub(sub, message)[:500]


def fingerprint(task: str, error: str | None) -> str:
    """The fingerprint of a failure: 12 hex digits from the task, the error's type and
    its first line, normalised (:func:`normalize_message`)."""
    kind, message = split_error(error)
    text = "\0".join((task, kind, normalize_message(message)))
    return hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=6).hexdigest()


class ErrorGroup(msgspec.Struct, frozen=True, kw_only=True):
    """Failed jobs that share a fingerprint: one kind of failure, however many times.

    ``message`` is the first line of the error, normalised; ``first_at`` and
    ``last_at`` bound when its jobs failed (``finished_at``); ``sample_job_id`` is its
    newest job. The group's jobs are the filter ``fingerprint:<fingerprint>``.
    """

    fingerprint: str
    task: str
    error_type: str
    message: str
    count: int
    first_at: float
    last_at: float
    sample_job_id: str

    @classmethod
    def of(cls, fp: str, sample: Job, *, count: int, first_at: float, last_at: float) -> ErrorGroup:
        """The group of fingerprint ``fp`` described by its newest job ``sample``."""
        kind, message = split_error(sample.error)
        return cls(
            fingerprint=fp,
            task=sample.task,
            error_type=kind,
            message=normalize_message(message),
            count=count,
            first_at=first_at,
            last_at=last_at,
            sample_job_id=sample.id,
        )

    @classmethod
    def fold(cls, jobs: Iterable[Job], *, limit: int) -> list[ErrorGroup]:
        """Group the failed ones of ``jobs`` by fingerprint, newest group first, at most
        ``limit`` groups."""
        found: dict[str, _Tally] = {}
        for job in jobs:
            if job.status is not JobStatus.FAILED:
                continue
            fp = fingerprint(job.task, job.error)
            at = failed_at(job)
            tally = found.get(fp)
            if tally is None:
                found[fp] = _Tally(job, at)
            else:
                tally.add(job, at)
        groups = [
            cls.of(fp, t.sample, count=t.count, first_at=t.first_at, last_at=t.last_at)
            for fp, t in found.items()
        ]
        groups.sort(key=lambda g: (g.last_at, g.sample_job_id), reverse=True)
        return groups[:limit]


def failed_at(job: Job) -> float:
    """When a failed job failed (its ``finished_at``; ``created_at`` if unset)."""
    return job.finished_at if job.finished_at is not None else job.created_at


class _Tally:
    __slots__ = ("count", "first_at", "last_at", "sample")

    def __init__(self, job: Job, at: float) -> None:
        self.sample = job
        self.count = 1
        self.first_at = self.last_at = at

    def add(self, job: Job, at: float) -> None:
        self.count += 1
        self.first_at = min(self.first_at, at)
        if (at, job.id) >= (self.last_at, self.sample.id):
            self.last_at = at
            self.sample = job
