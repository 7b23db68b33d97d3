"""DuckDB storage: the schema, the batched writer (`writer.Storage`), retention and read-only access.

Import from the submodules (`coral_ebpf.storage.writer`, `.database`, `.schema`): this package
stays empty so that importing it never pulls in the config package (which imports
`storage.settings` back).
"""
