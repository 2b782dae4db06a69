"""Writes to the entity store: import, demo data, and derived search data."""

from __future__ import annotations
