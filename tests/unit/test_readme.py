"""The configuration reference in README.md and docs/ is the one the schema generates, row for row."""

from __future__ import annotations

from pathlib import Path

import pytest

from coral_ebpf.agent.config import build_schema, reference_table
from coral_ebpf.config.reference import BEGIN, END, blocks, leaves, replace_blocks

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_generated_blocks_match_the_schema(path: Path) -> None:
    for block in blocks(path.read_text(encoding="utf-8")):
        assert block.table == reference_table(block.section), (
            f"{path.name}: the configuration reference ({block.section or 'all keys'}) differs from the schema: "
            "run `make docs` and commit the result"
        )


def test_the_readme_holds_the_whole_reference() -> None:
    assert [block.section for block in blocks((ROOT / "README.md").read_text(encoding="utf-8"))] == [None]


def test_every_key_has_a_row_and_a_description() -> None:
    table = reference_table()
    for leaf in leaves(build_schema()):
        assert f"| `{leaf.key}` |" in table
        assert leaf.node.get("description") or leaf.node.get("enum"), f"{leaf.key} is not described in its schema"


def test_blocks_are_replaced_in_place() -> None:
    red = BEGIN.replace("config-reference:", "config-reference red:")
    text = f"intro\n{BEGIN}\n| old |\n{END}\nmiddle\n{red}\n| old red |\n{END}\nrest\n"
    updated = replace_blocks(text, lambda section: f"| {section or 'all'} |\n")
    assert updated == f"intro\n{BEGIN}\n| all |\n{END}\nmiddle\n{red}\n| red |\n{END}\nrest\n"


def test_a_section_table_names_keys_relative_to_it() -> None:
    table = reference_table("otlp")
    assert "| `grpc_endpoint` | `127.0.0.1:4317` |" in table and "red." not in table
