"""PostgreSQL / SQLite side: table definitions, migrations, and the SQL each feature needs."""
