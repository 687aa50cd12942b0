"""The catalog: an index of runs and checkpoints in a database (SQLite default, PostgreSQL).

The catalog is an index, never the only copy: run directories stay the source of truth.
"""
