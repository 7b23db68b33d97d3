"""The README's configuration reference is the one the schema generates, row for row."""

from __future__ import annotations

from pathlib import Path

from coral_ebpf.agent.config import build_schema, reference_table
from coral_ebpf.config.reference import BEGIN, END, committed_table, leaves, replace_block

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_reference_is_generated_from_the_schema() -> None:
    committed = committed_table(README.read_text(encoding="utf-8"))
    assert committed == reference_table(), (
        "README.md's configuration reference differs from the schema: run "
        "`coral-ebpf config reference --write README.md` (or `make docs`) and commit the result"
    )


def test_every_key_has_a_row_and_a_description() -> None:
    table = reference_table()
    for leaf in leaves(build_schema()):
        assert f"| `{leaf.key}` |" in table
        assert leaf.node.get("description") or leaf.node.get("enum"), f"{leaf.key} is not described in its schema"


def test_the_block_is_replaced_in_place() -> None:
    text = f"intro\n{BEGIN}\n| old |\n{END}\nrest\n"
    assert replace_block(text, "| new |\n") == f"intro\n{BEGIN}\n| new |\n{END}\nrest\n"
    assert committed_table(replace_block(text, "| new |\n")) == "| new |\n"
