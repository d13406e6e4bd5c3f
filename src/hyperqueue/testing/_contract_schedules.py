"""The storage contract for periodic jobs' schedules (part of :class:`StorageContract`)."""

from __future__ import annotations

__all__ = ["ScheduleContract"]


class ScheduleContract:
    """Schedules: one job per slot, pause and resume, state kept across definitions."""
