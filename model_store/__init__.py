"""Versioned, integrity-checked model bundles."""
