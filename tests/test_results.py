import json

import pandas as pd
import pytest

from ablations.results import append_table, manifest, read_manifest, read_table, write_table
from probe.errors import BadInput


def test_write_append_read(tmp_path):
    df = pd.DataFrame({"query_id": ["1", "2"], "value": [0.5, 0.7]})
    write_table(df, tmp_path, "t", manifest(kind="test"))
    append_table(df.assign(value=[0.1, 0.2]), tmp_path, "t", manifest(kind="test"))
    back = read_table(tmp_path, "t")
    assert back["value"].tolist() == [0.5, 0.7, 0.1, 0.2]
    meta = read_manifest(tmp_path, "t")
    assert meta["rows"] == 4 and len(meta["runs"]) == 1 and meta["git_revision"]
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_unreadable_table_and_foreign_manifest(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(BadInput, match="is unreadable"):
        read_table(tmp_path, "bad")
    (tmp_path / "old.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(BadInput, match="schema_version 99"):
        read_manifest(tmp_path, "old")
