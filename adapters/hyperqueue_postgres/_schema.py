"""The database schema, as an ordered list of migrations in plain SQL.

Table ``hq_schema`` holds one row: how many migrations the database has seen. Opening
a storage applies the missing ones in one transaction that first takes a
transaction-level advisory lock, so two processes opening a new database at once
cannot both migrate it (the second waits, then finds nothing to do); a database whose
version is higher than :data:`SCHEMA_VERSION` was written by a newer hyperqueue and is
refused untouched. A transaction-level lock (not a session lock) also works through
PgBouncer in transaction mode.

Every table is prefixed ``hq_``: a transactional enqueue (``connection=``) shares the
application's own database, whose names are the application's.

Never edit a released migration: append a new one.
"""

from __future__ import annotations

from typing import Any

from hyperqueue import StorageError

__all__ = ["LOCK_CLASS", "MIGRATIONS", "SCHEMA_VERSION", "migrate"]

LOCK_CLASS = 0x48510000
"""First key of every advisory lock this adapter takes (``pg_advisory_xact_lock(k1, k2)``
with ``k1 = LOCK_CLASS + n``), so they stay apart from the application's own locks."""
MIGRATE_LOCK = LOCK_CLASS + 1

_V1: tuple[str, ...] = (
    # Jobs to run now wait behind each other in ``seq`` order (FIFO within a priority
    # and run_at); a job that goes back to pending (retry, rescue, release) takes a new
    # seq, as a new job would. The sequence is also what the idle-poll of a listener
    # could watch, and costs nothing to read.
    "CREATE SEQUENCE hq_jobs_seq",
    # One row per job. ``priority`` is the rank: 0 critical .. 3 low. The values a job
    # carries are JSONB (``headers``: the W3C trace context of its producer, set once);
    # what is queried is a column. A blocked workflow step has the
    # status 'blocked', out of the claim indexes; it reads back as pending.
    """
    CREATE TABLE hq_jobs (
        id           text             PRIMARY KEY,
        seq          bigint           NOT NULL DEFAULT nextval('hq_jobs_seq'),
        task         text             NOT NULL,
        queue        text             NOT NULL,
        status       text             NOT NULL,
        priority     smallint         NOT NULL,
        args         jsonb            NOT NULL DEFAULT '[]',
        kwargs       jsonb            NOT NULL DEFAULT '{}',
        attempts     integer          NOT NULL DEFAULT 0,
        max_attempts integer          NOT NULL DEFAULT 1,
        result       jsonb,
        error        text,
        traceback    text,
        progress     jsonb,
        key          text,
        tenant       text,
        timeout      double precision,
        created_at   double precision NOT NULL,
        run_at       double precision NOT NULL,
        started_at   double precision,
        finished_at  double precision,
        token        bigint           NOT NULL DEFAULT 0,
        lease_until  double precision,
        worker       text,
        rescues      integer          NOT NULL DEFAULT 0,
        max_rescues  integer          NOT NULL DEFAULT 3,
        workflow     text,
        step         jsonb,
        waiting      integer          NOT NULL DEFAULT 0,
        headers      jsonb            NOT NULL DEFAULT '{}'
    ) WITH (fillfactor = 90)
    """,
    # The hot table: every job is inserted, updated three times and (later) deleted.
    # Vacuum it after 1% of its rows changed instead of the default 20%, so the
    # claim indexes do not fill with dead entries between vacuums.
    """
    ALTER TABLE hq_jobs SET (
        autovacuum_vacuum_scale_factor = 0.01,
        autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_insert_scale_factor = 0.05,
        autovacuum_analyze_scale_factor = 0.02,
        autovacuum_vacuum_cost_delay = 1
    )
    """,
    # Claim order over pending jobs only, per queue and task (a worker claims the
    # tasks it knows), and over every queue (a worker that serves everything walks
    # it in order and stops after LIMIT rows).
    """
    CREATE INDEX hq_jobs_ready ON hq_jobs (queue, task, priority, run_at, seq)
        WHERE status = 'pending'
    """,
    """
    CREATE INDEX hq_jobs_order ON hq_jobs (priority, run_at, seq)
        WHERE status = 'pending'
    """,
    # Rescue of expired leases looks at running jobs only.
    "CREATE INDEX hq_jobs_leases ON hq_jobs (lease_until) WHERE status = 'running'",
    # Tenant caps and quotas count a tenant's pending and running jobs.
    """
    CREATE INDEX hq_jobs_tenant ON hq_jobs (tenant, status)
        WHERE tenant IS NOT NULL AND status IN ('pending', 'running')
    """,
    # Listings filtered by status, newest first (the dead-letter queue).
    "CREATE INDEX hq_jobs_status ON hq_jobs (status, id)",
    # A finishing step counts its workflow's active steps and finds the ready ones.
    """
    CREATE INDEX hq_jobs_workflow ON hq_jobs (workflow, status, waiting, seq)
        WHERE workflow IS NOT NULL
    """,
    # Idempotency keys, scoped by tenant: ``scope`` is the JSON text [tenant, key].
    """
    CREATE TABLE hq_job_keys (
        scope      text PRIMARY KEY,
        job_id     text NOT NULL,
        expires_at double precision
    )
    """,
    # Jobs per queue, task and status, as signed deltas: each transaction appends its
    # own rows (no row is shared by two writers, so no writer waits for another), and
    # readers sum them. Folding replaces the rows by their sums now and then.
    """
    CREATE TABLE hq_job_counts (
        queue  text    NOT NULL,
        task   text    NOT NULL,
        status text    NOT NULL,
        n      bigint  NOT NULL
    )
    """,
    """
    ALTER TABLE hq_job_counts SET (
        autovacuum_vacuum_scale_factor = 0.0,
        autovacuum_vacuum_threshold = 5000
    )
    """,
    # The event log. Writers append rows with ``id`` NULL, in ``n`` order; a sequencer
    # (see _events.py) gives committed rows their ``id`` afterwards, one sequencer at a
    # time, so ids are handed out in commit order and a reader never skips an id that
    # commits later. ``origin`` names the storage object that wrote the row.
    """
    CREATE TABLE hq_job_events (
        n      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id     bigint UNIQUE,
        at     double precision NOT NULL,
        type   text NOT NULL,
        job_id text NOT NULL,
        origin text NOT NULL
    )
    """,
    "CREATE INDEX hq_job_events_new ON hq_job_events (n) WHERE id IS NULL",
    """
    ALTER TABLE hq_job_events SET (
        autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_vacuum_insert_scale_factor = 0.05
    )
    """,
    # Worker pools alive on this database, with what they serve (msgspec JSON).
    """
    CREATE TABLE hq_workers (
        name       text PRIMARY KEY,
        expires_at double precision NOT NULL,
        info       text NOT NULL
    )
    """,
    # Workflows: their steps are jobs. The row is also the lock that serializes the
    # moves of one workflow's graph (releases, cascades, cancel, retry).
    """
    CREATE TABLE hq_workflows (
        id          text PRIMARY KEY,
        created_at  double precision NOT NULL,
        concurrency integer,
        steps       jsonb NOT NULL
    )
    """,
    # Periodic jobs: a schedule's definition and state as msgspec JSON, with the state
    # a fire checks as columns (a conditional UPDATE picks one winner per slot).
    """
    CREATE TABLE hq_schedules (
        name          text PRIMARY KEY,
        paused        boolean NOT NULL DEFAULT false,
        handled_until double precision,
        info          text NOT NULL
    )
    """,
)

_V2: tuple[str, ...] = (
    # Dead-letter groups and ``fingerprint:`` searches (hq.fingerprint): a failed job's
    # fingerprint is computed in Python (one definition for every backend) and stored
    # with the fencing token of the claim that failed it. A job only fails from a
    # claim, and every claim takes a new token, so ``fingerprint_token IS DISTINCT FROM
    # token`` says it is missing or from an earlier failure: the partial index finds
    # those, and is empty once they are filled in.
    "ALTER TABLE hq_jobs ADD COLUMN fingerprint text",
    "ALTER TABLE hq_jobs ADD COLUMN fingerprint_token bigint",
    # groups read this index alone: a failed job always has finished_at, and the tokens
    # say whether its fingerprint is current
    """
    CREATE INDEX hq_jobs_fingerprint ON hq_jobs (fingerprint, finished_at, id)
        INCLUDE (token, fingerprint_token) WHERE status = 'failed'
    """,
    """
    CREATE INDEX hq_jobs_fingerprint_stale ON hq_jobs (id)
        WHERE status = 'failed' AND fingerprint_token IS DISTINCT FROM token
    """,
)

_V3: tuple[str, ...] = (
    # Paused queues (MISSION D9): a claim in any process skips the queues named here.
    # A queue exists by its name, so a row may name a queue with no jobs yet.
    """
    CREATE TABLE hq_paused_queues (
        name      text PRIMARY KEY,
        paused_at double precision NOT NULL
    )
    """,
)

_V4: tuple[str, ...] = (
    # Leader leases (see _leader.py): work that one process at a time should do, such as
    # rescue sweeps and pruning. UNLOGGED: the rows are rewritten every few seconds and
    # need no WAL; a crash (or a failover to a standby) empties the table, which only
    # means that the next process to ask becomes the leader.
    """
    CREATE UNLOGGED TABLE hq_leaders (
        name       text PRIMARY KEY,
        holder     text NOT NULL,
        term       bigint NOT NULL,
        expires_at double precision NOT NULL
    )
    """,
)

_V5: tuple[str, ...] = (
    # Fair share between tenants (a claim takes turns between tenants, by their running
    # jobs): the claim-order index gains the tenant after the priority, so a
    # claim finds the tenants with pending jobs by one seek each and reads each
    # tenant's due jobs as one range, however many the other tenants have waiting. The
    # jobs without a tenant sort last in each priority (NULLS LAST): with no tenanted
    # job pending, a claim reads their range as it read the old index, and the loose
    # scan over the tenants stops where the range begins.
    "DROP INDEX hq_jobs_order",
    """
    CREATE INDEX hq_jobs_order ON hq_jobs (priority, tenant, run_at, seq)
        WHERE status = 'pending'
    """,
    # A fair claim starts each tenant's turns at its running jobs: with the status
    # first, the running jobs of every tenant are one range of this index (as long as
    # the workers are busy, not as long as the backlog), and a tenant's pending or
    # running jobs (caps, quotas) are still one range each.
    "DROP INDEX hq_jobs_tenant",
    """
    CREATE INDEX hq_jobs_tenant ON hq_jobs (status, tenant)
        WHERE tenant IS NOT NULL AND status IN ('pending', 'running')
    """,
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4, _V5)
"""Migration ``n`` (counting from 1) brings a database from version ``n - 1`` to ``n``."""

SCHEMA_VERSION = len(MIGRATIONS)


async def migrate(conn: Any) -> int:
    """Bring the database on ``conn`` (an asyncpg connection) to :data:`SCHEMA_VERSION`;
    returns the version it found."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, 0)", MIGRATE_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS hq_schema (version integer NOT NULL)")
        found = await conn.fetchval("SELECT version FROM hq_schema")
        if found is None:
            await conn.execute("INSERT INTO hq_schema (version) VALUES (0)")
            found = 0
        version = int(found)
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"the database has hyperqueue schema version {version}, newer than this "
                f"hyperqueue knows ({SCHEMA_VERSION}): upgrade hyperqueue-jobs"
            )
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                await conn.execute(statement)
        if version < SCHEMA_VERSION:
            await conn.execute("UPDATE hq_schema SET version = $1", SCHEMA_VERSION)
        return version
