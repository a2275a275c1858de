"""What the bridge remembers, in SQLite or PostgreSQL through peewee.

The models and their queries, the schema migrations, the admin rooms' tables and the pruning
of old rows. Every thread that uses the store has its own database connection (peewee keeps
connections per thread); the pruning timer runs on a thread of its own.
"""
