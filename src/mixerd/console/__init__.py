"""The console's core: what a hop, a decision, a span and a log record are, how they are stored
(SQLite or PostgreSQL), and how transactions, call trees, the service graph and RED series are
rebuilt from them. The HTTP API and the ingestion front-ends sit in the layers above."""
