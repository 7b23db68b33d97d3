"""Dropping a library's pages lowers the RSS it is counted for, and the library keeps working."""

from __future__ import annotations

import re
import sqlite3

from coral_ebpf.resident import drop_library_pages, mappings

SQLITE = re.compile(r"/libsqlite3\.so[^/]*$")


def _resident(pattern: re.Pattern[str]) -> tuple[int, int]:
    """(bytes resident in droppable mappings, bytes resident in the others) of the matching library."""
    found = [mapping for mapping in mappings() if pattern.search(mapping.path)]
    assert found, "libsqlite3 is mapped once sqlite3 is imported"
    droppable = sum(mapping.rss for mapping in found if mapping.droppable)
    kept = sum(mapping.rss for mapping in found if not mapping.droppable)
    return droppable, kept


def test_drop_library_pages_unmaps_clean_read_only_pages_and_the_library_still_works() -> None:
    connection = sqlite3.connect(":memory:")
    connection.execute("create table t (x integer)")
    connection.executemany("insert into t values (?)", [(n,) for n in range(1000)])
    before, kept_before = _resident(SQLITE)
    assert before > 0

    dropped = drop_library_pages(SQLITE)

    after, kept_after = _resident(SQLITE)
    assert dropped == before
    assert after < before
    # Writable data and copy-on-write pages (relocations) are never touched.
    assert kept_after == kept_before
    assert connection.execute("select sum(x) from t").fetchone() == (sum(range(1000)),)


def test_mappings_with_private_pages_are_never_droppable() -> None:
    for mapping in mappings():
        if mapping.anonymous or "w" in mapping.permissions:
            assert not mapping.droppable
