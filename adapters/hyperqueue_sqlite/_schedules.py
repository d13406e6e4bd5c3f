"""Periodic jobs' schedules in SQLite: placeholder, written next."""
