"""Fixture plugin; filled in by the area that owns it."""
