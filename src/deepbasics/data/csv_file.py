"""A numeric CSV file, such as the diabetes table."""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import itertools
import lzma
import os
import re
import warnings
import zlib
from typing import TextIO

import numpy as np

from deepbasics.config.settings import number
from deepbasics.data.in_memory import InMemoryDataModule
from deepbasics.errors import ConfigError

# data.delimiter as a word or an escape, as users write it on a command line
DELIMITER_WORDS = {"comma": ",", "semicolon": ";", "tab": "\t", "\\t": "\t", "pipe": "|", "space": " "}
WORD_OF = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe", " ": "space"}
# Compressed files by their first bytes, whatever their names
MAGIC = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}


def delimiter_of(value) -> str:
    """The one character that separates cells: given as itself, a word (tab, semicolon) or an escape."""
    value = DELIMITER_WORDS.get(str(value).lower(), str(value)) if value is not None else ""
    if len(value) != 1 or value in '"\r\n':
        words = ", ".join(WORD_OF.values())
        raise ConfigError(f"data.delimiter={value!r} must be one character or a word: {words}")
    return value


def open_text(path: str, encoding: str) -> TextIO:
    """The file as text, decompressed when it is gzip, bzip2 or xz."""
    try:
        "".encode(encoding)  # refuses hex, rot13 (codecs, but not of text) as it refuses unknown names
    except (LookupError, TypeError):
        raise ConfigError(
            f"data.encoding={encoding!r} is not a text encoding Python knows; e.g. utf-8, cp949, latin-1"
        ) from None
    with open(path, "rb") as f:
        start = f.read(6)
    opener = next((o for magic, o in MAGIC.items() if start.startswith(magic)), open)
    return opener(path, "rt", encoding=encoding, newline="")


def read_table(
    path: str, delimiter: str, header: bool | None, encoding: str, key: str = "data.path", settings: bool = True
) -> np.ndarray:
    """The numeric table (float32, 2-D), or one line on what the file looks like and which setting reads it. ``key``:
    the setting naming the file; ``settings``: whether data.* settings read it (not for predict's inputs). ``header``
    None: a first row of words (each cell holds letters and is not a number) names the columns."""
    try:
        with warnings.catch_warnings(), open_text(path, encoding) as f:
            warnings.simplefilter("ignore")  # numpy warns about an empty file; the caller says it
            first = f.readline()
            if header is None:
                cells = [cell.strip(' "') for cell in first.strip().split(delimiter)]
                header = all(number(cell) is None and re.search(r"[^\W\d_]", cell) for cell in cells)
            # quotechar: a spreadsheet may quote its numbers ("1.5"), which are numbers all the same
            rows = itertools.chain([first], f)
            return np.loadtxt(rows, delimiter=delimiter, skiprows=int(header), dtype=np.float32, ndmin=2, quotechar='"')
    except UnicodeError:
        raise ConfigError(f"{key} {path}: {not_utf8(path, encoding, settings)}") from None
    except (EOFError, OSError, zlib.error, lzma.LZMAError) as err:
        if isinstance(err, OSError) and err.errno is not None:  # permissions, a directory, ...
            raise ConfigError(f"{key} {path}: cannot read it ({err.strerror})") from None
        raise ConfigError(f"{key} {path} is a damaged compressed file ({err}); compress it again") from None
    except ValueError as err:
        # numpy's text ends in advice about its own arguments ("use usecols ..."): keep the diagnosis
        found = re.match(r".*? at row \d+, column \d+", str(err))
        reason = found.group(0) if found else str(err).split("; ")[0].rstrip(".")
        raise ConfigError(
            f"{key} {path}: {reason}; {diagnosis(path, delimiter, header, encoding, reason, settings)}"
        ) from None


def not_utf8(path: str, encoding: str, settings: bool = True) -> str:
    """What the bytes of a file that does not decode as ``encoding`` look like, and how to read it."""
    with open(path, "rb") as f:
        start = f.read(65536)
    if start[:2] in (b"\xff\xfe", b"\xfe\xff"):
        found = "utf-16"
    elif _decoded(start, "utf-8") is not None:
        found = "utf-8"
    else:  # a Korean spreadsheet's CSV export
        found = "cp949" if any("\uac00" <= c <= "\ud7a3" for c in _decoded(start, "cp949") or "") else "latin-1"
    name = codecs.lookup(encoding).name.removesuffix("-sig")
    if found == "utf-8":  # the default reads it
        return f"it is not {name} text but UTF-8" + ("; drop data.encoding" if settings else "")
    return f'it is not {name} text (it looks like {found}); save it as UTF-8 (a spreadsheet\'s "CSV UTF-8")' + (
        f" or pass data.encoding={found}" if settings else ""
    )


def _decoded(start: bytes, encoding: str) -> str | None:
    """The first bytes of a file as text (a character cut at the end of them waits for the rest), or None."""
    try:
        return codecs.getincrementaldecoder(encoding)().decode(start)
    except UnicodeDecodeError:
        return None


def diagnosis(path: str, delimiter: str, header: bool, encoding: str, reason: str, settings: bool = True) -> str:
    """Which setting most likely reads a file numpy could not: another delimiter (sniffed by Python's
    csv.Sniffer on its first lines), or a header row; else what every file must be."""
    try:
        with open_text(path, encoding) as f:
            sample = "".join(itertools.islice(f, 20))
        sniffed = csv.Sniffer().sniff(sample, delimiters="".join(WORD_OF)).delimiter
    except (csv.Error, OSError, EOFError, UnicodeError, zlib.error, lzma.LZMAError):
        sample, sniffed = "", None
    if re.search(r"(^|;)\s*-?\d+,\d+\s*(;|$)", sample, re.MULTILINE) and ";" in sample:
        return "its numbers use decimal commas (1,5): save it with decimal points (1.5) and commas between cells"
    widths = {len(line.split(sniffed)) for line in sample.splitlines() if line.strip()} if sniffed else set()
    if sniffed and sniffed != delimiter and len(widths) == 1 and widths.pop() >= 2:
        fix = f"pass data.delimiter={WORD_OF[sniffed]}" if settings else "save it comma-separated"
        return f"it looks {WORD_OF[sniffed]}-separated: {fix}"
    lines = [line for line in sample.splitlines() if line.strip()]
    if lines and all(line.rstrip().endswith(delimiter) for line in lines):
        word = WORD_OF.get(delimiter, repr(delimiter))
        return f"every row ends with a {word} (an empty last column): remove the {word} at the end of each row"
    rows = list(csv.reader(lines[1:], delimiter=delimiter))  # the first line may be a header either way
    cells = [(c, cell.strip()) for row in rows for c, cell in enumerate(row) if cell.strip()]
    texts = [(c, cell) for c, cell in cells if number(cell.strip('"')) is None]
    if texts:  # text below the first row: a column of words, not a header
        column, cell = texts[0]
        return (
            f"column {column + 1} holds text ({cell.strip()!r}): every cell must be a number; map text labels"
            " to numbers (yes/no to 1/0), or leave that column out with data.features"
        )
    if not header and " at row 0," in reason:  # words in the first row: most likely column names
        return "if the first row names the columns, " + ("pass data.header=true" if settings else "remove that row")
    return "every cell must be a number, every row as wide"


class CSVDataModule(InMemoryDataModule):
    """A numeric CSV (numbers may be quoted; gzip, bzip2 and xz read as they are). ``target`` and ``features`` are
    columns by name (``header``: the first row names them) or position; by default the target is ``label_column`` (the
    last), the features all others. Without split fractions every row trains, in file order, as in the tutorial; else a
    seeded shuffle carves out val and test. ``standardize``: scale features by the training split's mean and std."""

    def __init__(
        self,
        path: str,
        label_column: int = -1,
        delimiter: str = ",",
        header: bool = False,
        val_fraction: float = 0.0,
        test_fraction: float = 0.0,
        seed: int = 0,
        target: str | int | None = None,
        features: list | None = None,
        standardize: bool = False,
        batch_size: int | None = None,
        encoding: str = "utf-8-sig",
    ):
        super().__init__()
        for key, share in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
                raise ConfigError(f"data.{key}={share!r} must be a number from 0 up to (not including) 1")
        if val_fraction + test_fraction >= 1:
            raise ConfigError(
                f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} leave no rows to train on;"
                " keep their sum below 1"
            )
        path = os.path.abspath(os.path.expanduser(str(path)))  # absolute: a checkpoint evaluates from any directory
        self.save_hyperparameters(logger=False)  # the loggers get the run's flat settings instead

    def make_splits(self):
        hp = self.hparams
        if os.path.isdir(hp.path):
            raise ConfigError(f"data.path {hp.path} is a directory; pass data.path=<csv file>")
        if not os.path.isfile(hp.path):
            raise ConfigError(f"data.path: no file at {hp.path}; pass data.path=<csv file>")
        table = read_table(hp.path, delimiter_of(hp.delimiter), hp.header, hp.encoding)
        if table.size == 0:
            read = "beyond its header row" if hp.header else "(data.header=false)"
            raise ConfigError(f"data.path {hp.path} has no rows {read}; give a CSV with data")
        if table.shape[1] < 2:
            raise ConfigError(f"data.path {hp.path} has one column; it needs features and a label column")
        width = table.shape[1]
        names = self._column_names(width)
        target = self._column(hp.label_column if hp.target is None else hp.target, names, width, "data.target")
        if hp.features is None:
            features = [i for i in range(width) if i != target]
        else:  # one column given without brackets (data.features=glucose) is a list of one
            given = [hp.features] if isinstance(hp.features, (str, int)) else hp.features
            features = [self._column(f, names, width, "data.features") for f in given]
            if target in features or len(set(features)) != len(features) or not features:
                raise ConfigError(f"data.features={list(given)}: name each input column once, and not the target")
        y, x = table[:, target], table[:, features]
        n = len(table)
        n_test, n_val = round(n * hp.test_fraction), round(n * hp.val_fraction)
        if n_test == 0 and n_val == 0:
            return {"train": (x, y)}
        order = np.random.default_rng(hp.seed).permutation(n)
        parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
        return {name: (x[idx], y[idx]) for name, idx in parts.items() if len(idx)}

    def _column_names(self, width: int) -> list[str] | None:
        """The header's column names (None without a header)."""
        if not self.hparams.header:
            return None
        with open_text(self.hparams.path, self.hparams.encoding) as f:
            row = next(csv.reader(f, delimiter=delimiter_of(self.hparams.delimiter)), [])
        names = [name.strip() for name in row]
        return names if len(names) == width else None

    def _column(self, key, names: list[str] | None, width: int, what: str) -> int:
        """A column's position from its name (needs the header) or its index (negative counts from the end)."""
        if isinstance(key, str) and not key.lstrip("-").isdigit():
            if names is None:
                raise ConfigError(
                    f"{what}={key!r} is a name: pass data.header=true when the first row names the columns"
                )
            if key not in names:
                raise ConfigError(
                    f"{what}={key!r} is not a column of {self.hparams.path}; its columns are: {', '.join(names)}"
                )
            return names.index(key)
        index = int(key)
        if not -width <= index < width:
            raise ConfigError(f"{what}={index} is not a column: the file has {width} (0 to {width - 1})")
        return index % width
