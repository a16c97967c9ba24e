"""Alembic migrations of the log's database (run by `ledger.storage.migrate`)."""
