"""IoT Hub's twin query language: parser -> typed AST -> SQL (SQLite, PostgreSQL); reference evaluator."""
