"""What every command shares: option parsing helpers."""

from __future__ import annotations


def csv_list(value: str | None) -> list[str] | None:
    """A comma-separated option value as a list (None when empty)."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None
