"""docs/operations.md's configuration table is the one kernel/config.py's declaration renders."""

from __future__ import annotations

from kernel import config_table
from kernel.config import declared


def test_the_configuration_table_in_the_operations_guide_is_current() -> None:
    guide = config_table.DOCUMENT.read_text()
    assert config_table.rendered(guide) == guide, (
        "docs/operations.md's settings table is stale: python -m kernel.config --write"
    )


def test_the_table_has_one_row_per_declared_variable_and_marks_the_secrets() -> None:
    rows = [line for line in config_table.table().splitlines()[2:]]
    assert [row.split(" | ")[0].strip("| `") for row in rows] == [
        variable.variable for _, variable in declared()
    ]
    for row, (_, variable) in zip(rows, declared(), strict=True):
        assert (row.split(" | ")[2] == "secret") == variable.secret, row


def test_check_fails_on_a_stale_table_and_write_mends_it(tmp_path, monkeypatch) -> None:
    stale = config_table.DOCUMENT.read_text().replace("`LEDGERDESK_RPC_TIMEOUT` | `10`", "`x`")
    document = tmp_path / "operations.md"
    document.write_text(stale)
    monkeypatch.setattr(config_table, "DOCUMENT", document)

    assert config_table.main(["--check"]) == 1
    assert config_table.main(["--write"]) == 0
    assert config_table.main(["--check"]) == 0
    assert document.read_text() == config_table.rendered(stale)
