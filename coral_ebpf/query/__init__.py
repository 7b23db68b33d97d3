"""RED and trace queries over the DuckDB file: pure functions of a connection and parameters.

Entry point: `coral_ebpf.query.dispatch.run_query(connection, kind, params)`.
"""
