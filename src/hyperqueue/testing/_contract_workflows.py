"""The storage contract for workflows and batches (part of :class:`StorageContract`)."""

from __future__ import annotations

__all__ = ["WorkflowContract"]


class WorkflowContract:
    """Workflows: release of dependents with the parent's end, concurrency, cancel, retry."""
