"""The colony: polls many agents' pull APIs into one DuckDB for fleet-wide queries."""
