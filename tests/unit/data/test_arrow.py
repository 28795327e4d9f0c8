"""Which columns mlrt's parquet writers dictionary-encode (runtime.data.arrow)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from runtime.data.arrow import dictionary_columns


def test_text_columns_and_extra_names_get_a_dictionary_floats_do_not(tmp_path):
    table = pa.table({"x": [0.1, 0.2], "n": [1, 2], "city": ["a", "b"],
                      "kind": pa.array(["u", "v"]).dictionary_encode(),
                      "big": pa.array(["p", "q"], pa.large_string())})

    names = dictionary_columns(table.schema, ["prediction", "city"])

    assert names == ["city", "kind", "big", "prediction"]
    pq.write_table(table, tmp_path / "t.parquet", use_dictionary=names)
    meta = pq.ParquetFile(tmp_path / "t.parquet").metadata.row_group(0)
    encoded = {meta.column(i).path_in_schema for i in range(meta.num_columns)
               if any("DICTIONARY" in e for e in meta.column(i).encodings)}
    assert encoded == {"city", "kind", "big"}  # a name not in the table is ignored
