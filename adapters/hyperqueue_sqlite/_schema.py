"""The database schema, as an ordered list of migrations in plain SQL.

``PRAGMA user_version`` records how many migrations a file has seen. Opening a file
applies the missing ones in one ``BEGIN IMMEDIATE`` transaction, so two processes
opening a new file at once cannot both migrate it; a file whose version is higher than
:data:`SCHEMA_VERSION` was written by a newer hyperqueue and is refused untouched.

Never edit a released migration: append a new one. Jobs keep what is queried as
columns (status, priority rank, run_at, seq, lease, token...) and the values a job
carries (args, kwargs, result, progress) as JSON text, so the file stays readable with
the ``sqlite3`` shell.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

_V1 = (
    # One row per job. ``seq`` (the rowid) is the insertion order: FIFO within a
    # priority and run_at. ``priority`` is the rank: 0 critical .. 3 low.
    """
    CREATE TABLE jobs (
        seq          INTEGER PRIMARY KEY,
        id           TEXT    NOT NULL UNIQUE,
        task         TEXT    NOT NULL,
        queue        TEXT    NOT NULL,
        status       TEXT    NOT NULL,
        priority     INTEGER NOT NULL,
        args         TEXT    NOT NULL DEFAULT '[]',
        kwargs       TEXT    NOT NULL DEFAULT '{}',
        attempts     INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL DEFAULT 1,
        result       TEXT,
        error        TEXT,
        traceback    TEXT,
        progress     TEXT,
        key          TEXT,
        tenant       TEXT,
        timeout      REAL,
        created_at   REAL    NOT NULL,
        run_at       REAL    NOT NULL,
        started_at   REAL,
        finished_at  REAL,
        token        INTEGER NOT NULL DEFAULT 0,
        lease_until  REAL,
        worker       TEXT
    )
    """,
    # Claim order, over pending jobs only: finished jobs never slow a claim down. A
    # claim scans it once per queue and priority (the queues with pending jobs come
    # from job_counts), stopping at the first job scheduled for later.
    """
    CREATE INDEX jobs_ready ON jobs (queue, priority, run_at, seq)
        WHERE status = 'pending'
    """,
    # Rescue of expired leases looks at running jobs only.
    """
    CREATE INDEX jobs_leases ON jobs (lease_until)
        WHERE status = 'running'
    """,
    # The dead-letter listing, newest first, without scanning completed jobs.
    """
    CREATE INDEX jobs_dead ON jobs (id)
        WHERE status = 'failed'
    """,
    # Idempotency keys, scoped by tenant: ``scope`` is the JSON text [tenant, key].
    # ``expires_at`` NULL keeps the key for as long as its job is stored.
    """
    CREATE TABLE job_keys (
        scope      TEXT PRIMARY KEY,
        job_id     TEXT NOT NULL,
        expires_at REAL
    ) WITHOUT ROWID
    """,
    # Jobs per queue per status, kept in step by every write (a GROUP BY over millions
    # of finished jobs would be too slow for a dashboard that asks every second).
    """
    CREATE TABLE job_counts (
        queue  TEXT    NOT NULL,
        status TEXT    NOT NULL,
        n      INTEGER NOT NULL,
        PRIMARY KEY (queue, status)
    ) WITHOUT ROWID
    """,
    # Counters shared by the processes on this file. 'work' grows whenever a write
    # makes a job pending, so idle workers elsewhere know there may be work to claim.
    """
    CREATE TABLE hq_meta (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
    "INSERT INTO hq_meta (name, value) VALUES ('work', 0)",
    # The processes that have this file open (health reports several writers).
    """
    CREATE TABLE hq_processes (
        host      TEXT    NOT NULL,
        pid       INTEGER NOT NULL,
        opened_at REAL    NOT NULL,
        PRIMARY KEY (host, pid)
    ) WITHOUT ROWID
    """,
    # Audit log of every mutation (MISSION D6).
    """
    CREATE TABLE audit_log (
        seq      INTEGER PRIMARY KEY,
        at       REAL    NOT NULL,
        event    TEXT    NOT NULL,
        actor    TEXT,
        tenant   TEXT,
        resource TEXT,
        action   TEXT    NOT NULL,
        result   TEXT    NOT NULL,
        metadata TEXT    NOT NULL DEFAULT '{}'
    )
    """,
    "CREATE INDEX audit_log_at ON audit_log (at)",
    # Event history: ``seq`` is the id a live stream resumes from (Last-Event-ID).
    """
    CREATE TABLE events (
        seq    INTEGER PRIMARY KEY,
        at     REAL NOT NULL,
        type   TEXT NOT NULL,
        job_id TEXT,
        body   TEXT NOT NULL
    )
    """,
    "CREATE INDEX events_at ON events (at)",
    # Configuration, versioned: every change is a new row holding the whole document.
    """
    CREATE TABLE config_versions (
        version    INTEGER PRIMARY KEY,
        created_at REAL NOT NULL,
        author     TEXT,
        comment    TEXT,
        document   TEXT NOT NULL
    )
    """,
    # API keys: only a hash of the key is stored (MISSION D4).
    """
    CREATE TABLE api_keys (
        id           TEXT    PRIMARY KEY,
        name         TEXT    NOT NULL,
        key_hash     TEXT    NOT NULL UNIQUE,
        roles        TEXT    NOT NULL DEFAULT '[]',
        tenant       TEXT,
        created_at   REAL    NOT NULL,
        expires_at   REAL,
        revoked_at   REAL,
        last_used_at REAL,
        uses         INTEGER NOT NULL DEFAULT 0
    )
    """,
)

_V2 = (
    # A lost worker spends no attempt; rescues count the losses (MISSION A1, DESIGN
    # "Delivery across processes and hosts").
    "ALTER TABLE jobs ADD COLUMN rescues INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE jobs ADD COLUMN max_rescues INTEGER NOT NULL DEFAULT 3",
    # Claims name the tasks a worker knows: one range scan per queue, task and priority.
    "DROP INDEX jobs_ready",
    """
    CREATE INDEX jobs_ready ON jobs (queue, task, priority, run_at, seq)
        WHERE status = 'pending'
    """,
    # Tenant caps and quotas count a tenant's pending and running jobs at claim and
    # enqueue; jobs without a tenant stay out of this index.
    """
    CREATE INDEX jobs_tenant ON jobs (tenant, status)
        WHERE tenant IS NOT NULL AND status IN ('pending', 'running')
    """,
    # Jobs per queue, task and status, kept in step by every write: counts by queue,
    # the tasks with pending jobs (a claim looks at those only) and the backlog.
    """
    CREATE TABLE task_counts (
        queue  TEXT    NOT NULL,
        task   TEXT    NOT NULL,
        status TEXT    NOT NULL,
        n      INTEGER NOT NULL,
        PRIMARY KEY (queue, task, status)
    ) WITHOUT ROWID
    """,
    """
    INSERT INTO task_counts (queue, task, status, n)
        SELECT queue, task, status, count(*) FROM jobs GROUP BY queue, task, status
    """,
    "DROP TABLE job_counts",
    # The event log: every job transition, written in the transaction of the change.
    # A row is small on purpose (a job's whole JSON per event tripled the bytes each job
    # writes): readers join the job's row. Ids only grow: retention never deletes the
    # newest row, so a new id is never one a reader has seen (no AUTOINCREMENT needed,
    # which costs a second write per row). ``origin`` names the storage object.
    "DROP TABLE events",
    """
    CREATE TABLE job_events (
        id     INTEGER PRIMARY KEY,
        at     REAL NOT NULL,
        type   TEXT NOT NULL,
        job_id TEXT NOT NULL,
        origin TEXT NOT NULL
    )
    """,
    # Worker pools alive on this file, with what they serve (msgspec JSON).
    """
    CREATE TABLE hq_workers (
        name       TEXT PRIMARY KEY,
        expires_at REAL NOT NULL,
        info       BLOB NOT NULL
    ) WITHOUT ROWID
    """,
)

_V3 = (
    # Workflows (MISSION A10, A12): a step is a job with a ``workflow`` and its place in
    # it (``step``: msgspec JSON of hq.Step). A blocked step (waiting for its parents,
    # or for a slot under its workflow's concurrency) has status 'blocked', so the
    # claim index never sees it; it reads back as pending. ``waiting`` counts its
    # parents not yet finished.
    "ALTER TABLE jobs ADD COLUMN workflow TEXT",
    "ALTER TABLE jobs ADD COLUMN step TEXT",
    "ALTER TABLE jobs ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0",
    # A finishing step counts its workflow's active steps and finds the blocked steps
    # ready to release (waiting = 0, in order) with one range scan each.
    """
    CREATE INDEX jobs_workflow ON jobs (workflow, status, waiting, seq)
        WHERE workflow IS NOT NULL
    """,
    """
    CREATE TABLE workflows (
        id          TEXT PRIMARY KEY,
        created_at  REAL NOT NULL,
        concurrency INTEGER,
        steps       TEXT NOT NULL
    ) WITHOUT ROWID
    """,
    # Periodic jobs (MISSION A4): one row per schedule, its definition and state as
    # msgspec JSON of hq.Schedule; every write to it runs in a write transaction.
    """
    CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        info TEXT NOT NULL
    ) WITHOUT ROWID
    """,
)

_V4 = (
    # Message headers of a job (MISSION E1): the W3C trace context of the span that
    # enqueued it (traceparent, tracestate, baggage) as a JSON object, NULL when empty,
    # so a worker in another process joins the producer's trace.
    "ALTER TABLE jobs ADD COLUMN headers TEXT",
)

_V5 = (
    # Dead-letter groups and ``fingerprint:`` searches (hq.fingerprint): a failed job's
    # fingerprint is computed in Python (one definition for every backend) and stored
    # with the fencing token of the claim that failed it. A job can only fail from a
    # claim, and every claim takes a new token, so ``fingerprint_token IS NOT token``
    # says the stored fingerprint is missing or from an earlier failure; the partial
    # index below finds exactly those, and holds nothing once they are filled in.
    "ALTER TABLE jobs ADD COLUMN fingerprint TEXT",
    "ALTER TABLE jobs ADD COLUMN fingerprint_token INTEGER",
    # Groups read this index alone: a failed job always has finished_at, and the
    # tokens say whether its fingerprint is current.
    """
    CREATE INDEX jobs_fingerprint ON jobs (fingerprint, finished_at, id, token, fingerprint_token)
        WHERE status = 'failed'
    """,
    """
    CREATE INDEX jobs_fingerprint_stale ON jobs (seq)
        WHERE status = 'failed' AND fingerprint_token IS NOT token
    """,
)

_V6 = (
    # Paused queues (MISSION D9): a claim in any process skips the queues named here.
    # A queue exists by its name, so a row may name a queue with no jobs yet. The claim
    # reads this table once per call, next to the few rows of task_counts.
    """
    CREATE TABLE paused_queues (
        name      TEXT PRIMARY KEY,
        paused_at REAL NOT NULL
    ) WITHOUT ROWID
    """,
)

_V7 = (
    # Fair share between tenants (a claim takes every tenant's first due job before any
    # tenant's second): the claim index gains the tenant after the priority, so one
    # tenant's due jobs are one range, found by a seek per tenant however long the
    # other tenants' lines are. Jobs without a tenant (NULL) are the first range: with
    # no tenanted job pending a claim reads it as it read the old index.
    "DROP INDEX jobs_ready",
    """
    CREATE INDEX jobs_ready ON jobs (queue, task, priority, tenant, run_at, seq)
        WHERE status = 'pending'
    """,
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7)
"""Migration ``n`` (counting from 1) brings a file from version ``n - 1`` to ``n``."""

SCHEMA_VERSION = len(MIGRATIONS)
