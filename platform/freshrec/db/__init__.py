"""The database: where it is (embedded or external), its schema and its migrations."""
from freshrec.db.engine import DatabaseError, connection_parts, database_url, get_engine, require_pgvector
from freshrec.db.migrate import downgrade, upgrade

__all__ = ["DatabaseError", "connection_parts", "database_url", "downgrade", "get_engine", "require_pgvector", "upgrade"]
