"""Data layer: schema, the DuckDB event store, ingest, splits and sequence building."""
