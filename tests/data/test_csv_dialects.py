"""CSV files as spreadsheets and other tools write them: another delimiter (given as a word or an escape),
quoted numbers, compressed files, other text encodings. Each reads to the same table as the plain file."""

from __future__ import annotations

import bz2
import gzip
import lzma

import numpy as np
import pytest

from deepbasics.data import CSVDataModule

ROWS = [[1.5, 2.0, 0.0], [3.0, -1.0, 1.0], [2.0, 2.5, 0.0]]


def text(delimiter: str = ",", quote: bool = False, header: str | None = "a,b,y") -> str:
    cell = '"{}"' if quote else "{}"
    lines = [delimiter.join(cell.format(v) for v in row) for row in ROWS]
    return "\n".join(([header.replace(",", delimiter)] if header else []) + lines) + "\n"


def table_of(path, **options) -> np.ndarray:
    data = CSVDataModule(str(path), **options)
    data.setup()
    x, y = data.splits["train"]
    return np.hstack([x.numpy(), y.numpy()])


DIALECTS = [
    ("tabs.tsv", text("\t").encode(), {"delimiter": "tab", "header": True}),
    ("tabs_escaped.csv", text("\t").encode(), {"delimiter": "\\t", "header": True}),
    ("semicolons.csv", text(";").encode(), {"delimiter": "semicolon", "header": True}),
    ("pipes.csv", text("|", header=None).encode(), {"delimiter": "|"}),
    ("quoted.csv", text(quote=True).encode(), {"header": True}),
    ("bom.csv", b"\xef\xbb\xbf" + text().encode(), {"header": True}),
    ("named.csv.gz", gzip.compress(text().encode(), mtime=0), {"header": True, "target": "y"}),
    ("gzip_by_content.csv", gzip.compress(text().encode(), mtime=0), {"header": True}),
    ("named.csv.bz2", bz2.compress(text().encode()), {"header": True}),
    ("named.csv.xz", lzma.compress(text().encode()), {"header": True}),
    (
        "korean.csv",
        text(header="키,몸무게,y").encode("cp949"),
        {"header": True, "encoding": "cp949", "target": "y"},
    ),
    ("latin1.csv", text(header="café,b,y").encode("latin-1"), {"header": True, "encoding": "latin-1"}),
    ("utf16.csv", text().encode("utf-16"), {"header": True, "encoding": "utf-16", "target": "y"}),
]


@pytest.mark.parametrize("name, content, options", DIALECTS, ids=[name for name, _, _ in DIALECTS])
def test_a_dialect_reads_as_the_plain_table(tmp_path, name, content, options):
    path = tmp_path / name
    path.write_bytes(content)
    assert table_of(path, **options).tolist() == ROWS
