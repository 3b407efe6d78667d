"""Alembic migrations of the hub's database; run them through hub.storage.migrate."""
