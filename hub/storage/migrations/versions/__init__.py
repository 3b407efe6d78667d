"""Alembic revisions, one module each, applied in ``down_revision`` order."""
