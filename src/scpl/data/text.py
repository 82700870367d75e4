"""Text classification data sets on disk: readers for their standard layouts (tokens, the
vocabulary and id tensors are :mod:`scpl.data.tokens`).

Every reader returns ``(train_texts, train_labels, test_texts, test_labels, class_names)`` with
labels ``0..C-1`` indexing ``class_names``. The packaged Debian descriptions set
(:func:`load_debian`) needs no download; AG News, DBpedia, IMDB and SST-2 are read from a folder
given as ``root``, else ``$SCPL_DATA/<name>``, else ``~/.scpl/data/<name>``.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import IO, Any, Optional, Union

from ..errors import DataError
from .images import data_root, where_to_put

PathLike = Union[str, os.PathLike]
TextSplits = tuple[list[str], list[int], list[str], list[int], list[str]]
"""``(train_texts, train_labels, test_texts, test_labels, class_names)``."""

DEBIAN_ASSET = "debian-descriptions.csv.gz"
AG_NEWS_CLASSES = ["World", "Sports", "Business", "Sci/Tech"]
DBPEDIA_CLASSES = [
    "Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder",
    "MeanOfTransportation", "Building", "NaturalPlace", "Village", "Animal", "Plant",
    "Album", "Film", "WrittenWork",
]
IMDB_CLASSES = ["neg", "pos"]
SST2_CLASSES = ["negative", "positive"]

ZHANG_URL = ("https://github.com/mhjabreel/CharCnn_Keras/tree/master/data "
             "(or the Zhang et al. 2015 archives {archive})")
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
SST2_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"


# --------------------------------------------------------------------------- locating files

def _find(base: Path, subdir: str, files: Sequence[str]) -> Optional[Path]:
    """``base/subdir`` or ``base`` itself, whichever holds all ``files``; None if neither does."""
    for folder in (base / subdir, base):
        if all((folder / f).is_file() for f in files):
            return folder
    return None


def _missing(name: str, base: Path, subdir: str, files: Sequence[str], url: str) -> FileNotFoundError:
    wanted = ", ".join(files)
    return FileNotFoundError(
        f"{name}: expected the files {wanted} in {base / subdir} or {base}; download them from {url} "
        f"and put them in {where_to_put(name)}"
    )


# --------------------------------------------------------------------------- row parsing

def _bad(path: PathLike, line: int, why: str) -> DataError:
    return DataError(f"{path}, line {line}: {why}")


def _not_utf8(path: PathLike) -> DataError:
    """The error for a file that is not UTF-8, naming its first line that is not."""
    for number, raw in enumerate(Path(path).read_bytes().splitlines(), 1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            column = exc.start + 1
            return _bad(path, number, f"not UTF-8 text (byte {raw[exc.start]:#04x} at column {column}); "
                                      "convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8")
    return DataError(f"{path}: not UTF-8 text; convert the file to UTF-8")


def _read_text(path: Path) -> str:
    """A UTF-8 text file's content; :class:`DataError` naming the line if it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _not_utf8(path) from None


def _rows(f: IO[str], path: PathLike = "", **fmt: Any) -> Iterator[tuple[int, list[str]]]:
    """CSV rows with the (1-based) line number where each row starts; blank lines are skipped. A
    file that is not UTF-8 (or a row csv cannot parse) raises :class:`DataError` naming the line."""
    reader = csv.reader(f, **fmt)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
        except csv.Error as exc:
            raise _bad(path, reader.line_num, f"not a valid CSV row ({exc})") from None
        if row:
            yield start, row
        start = reader.line_num + 1


def _rows_under_header(f: IO[str], path: PathLike, header: list[str],
                       **fmt: object) -> Iterator[tuple[int, list[str]]]:
    """:func:`_rows` after a required header line, each row checked to have the header's columns."""
    tab = fmt.get("delimiter") == "\t"
    rows = _rows(f, path, **fmt)
    first = next(rows, None)
    if first is None or first[1] != header:
        raise _bad(path, 1, f"expected the header {('<TAB>' if tab else ',').join(header)}")
    for line, row in rows:
        if len(row) != len(header):
            raise _bad(path, line, f"expected {len(header)} {'tab-separated ' if tab else ''}columns "
                                   f"({', '.join(header)}), found {len(row)}")
        yield line, row


def _label(value: str, n_classes: int, path: PathLike, line: int, first: int = 1) -> int:
    """``value`` (a class index counted from ``first``) as a label in ``0..n_classes-1``."""
    try:
        label = int(value) - first
    except ValueError:
        raise _bad(path, line, f"class index {value!r} is not an integer") from None
    if not 0 <= label < n_classes:
        raise _bad(path, line, f"class index {value!r} outside {first}..{n_classes - 1 + first}")
    return label


def _read_zhang_csv(path: Path, n_classes: int) -> tuple[list[str], list[int]]:
    r"""Zhang et al. (2015) CSV: no header, ``class (1-based), title, body``; text = title + " " + body.

    Newlines escaped as the two characters ``\n`` become spaces; nothing else is changed.
    """
    texts: list[str] = []
    labels: list[int] = []
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in _rows(f, path):
            if len(row) != 3:
                raise _bad(path, line, f"expected 3 columns (class, title, text), found {len(row)}")
            labels.append(_label(row[0], n_classes, path, line))
            texts.append((row[1] + " " + row[2]).replace("\\n", " "))
    return texts, labels


# --------------------------------------------------------------------------- readers

def load_debian(path: Optional[PathLike] = None) -> TextSplits:
    """Debian package descriptions labelled with their archive section (16 classes, 8,888 + 2,399 rows).

    Reads the gzipped CSV packaged with scpl (``split,label,text`` header) unless ``path`` names
    another file in that format (gzipped if it ends in ``.gz``). Class ids follow the sorted
    section names.
    """
    if path is None:
        with (resources.files("scpl.data") / "assets" / DEBIAN_ASSET).open("rb") as raw:
            data = gzip.decompress(raw.read()).decode("utf-8")
        source: PathLike = DEBIAN_ASSET
    else:
        source = Path(path)
        opener = gzip.open if source.suffix == ".gz" else open
        with opener(source, "rt", encoding="utf-8", newline="") as f:
            data = f.read()
    rows = list(_rows(io.StringIO(data, newline="")))
    if not rows or rows[0][1] != ["split", "label", "text"]:
        raise _bad(source, 1, "expected the header split,label,text")
    splits: dict[str, tuple[list[str], list[str]]] = {"train": ([], []), "test": ([], [])}
    for line, row in rows[1:]:
        if len(row) != 3:
            raise _bad(source, line, f"expected 3 columns (split, label, text), found {len(row)}")
        if row[0] not in splits:
            raise _bad(source, line, f"split {row[0]!r} is neither 'train' nor 'test'")
        splits[row[0]][0].append(row[2])
        splits[row[0]][1].append(row[1])
    names = sorted(set(splits["train"][1]) | set(splits["test"][1]))
    ids = {name: i for i, name in enumerate(names)}
    (tr_x, tr_y), (te_x, te_y) = splits["train"], splits["test"]
    return tr_x, [ids[y] for y in tr_y], te_x, [ids[y] for y in te_y], names


def load_ag_news(root: Optional[PathLike] = None) -> TextSplits:
    r"""AG News (Zhang et al. 2015): ``train.csv`` and ``test.csv`` in ``root`` or ``root/ag_news_csv``.

    No header; columns ``class (1..4), title, description``; text = title + " " + description with
    literal ``\n`` sequences replaced by spaces. Classes: World, Sports, Business, Sci/Tech.
    """
    base, files = data_root("ag_news", root), ("train.csv", "test.csv")
    folder = _find(base, "ag_news_csv", files)
    if folder is None:
        raise _missing("ag_news", base, "ag_news_csv", files,
                       ZHANG_URL.format(archive="ag_news_csv.tar.gz"))
    train = _read_zhang_csv(folder / "train.csv", len(AG_NEWS_CLASSES))
    test = _read_zhang_csv(folder / "test.csv", len(AG_NEWS_CLASSES))
    return train[0], train[1], test[0], test[1], list(AG_NEWS_CLASSES)


def load_dbpedia(root: Optional[PathLike] = None) -> TextSplits:
    r"""DBpedia ontology (Zhang et al. 2015): ``train.csv``, ``test.csv`` (and ``classes.txt``) in
    ``root/dbpedia_csv`` or ``root``.

    No header; columns ``class (1..14), title, content``; text = title + " " + content with literal
    ``\n`` sequences replaced by spaces. Class names come from ``classes.txt`` (one a line) if
    present, else the standard 14 names.
    """
    base, files = data_root("dbpedia", root), ("train.csv", "test.csv")
    folder = _find(base, "dbpedia_csv", files)
    if folder is None:
        raise _missing("dbpedia", base, "dbpedia_csv", files,
                       ZHANG_URL.format(archive="dbpedia_csv.tar.gz"))
    names = list(DBPEDIA_CLASSES)
    if (folder / "classes.txt").is_file():
        names = [s.strip() for s in _read_text(folder / "classes.txt").splitlines()
                 if s.strip()]
    train = _read_zhang_csv(folder / "train.csv", len(names))
    test = _read_zhang_csv(folder / "test.csv", len(names))
    return train[0], train[1], test[0], test[1], names


_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
IMDB_CSV = "IMDB Dataset.csv"


def _read_acl_split(folder: Path) -> tuple[list[str], list[int]]:
    texts: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(IMDB_CLASSES):
        for file in sorted((folder / name).glob("*.txt")):
            texts.append(_BR.sub(" ", _read_text(file)))
            labels.append(label)
    return texts, labels


def _read_imdb_csv(path: Path, train_rows: int) -> TextSplits:
    texts: list[str] = []
    labels: list[int] = []
    ids = {"negative": 0, "positive": 1}
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in _rows_under_header(f, path, ["review", "sentiment"]):
            if row[1] not in ids:
                raise _bad(path, line, f"sentiment {row[1]!r} is neither 'positive' nor 'negative'")
            texts.append(_BR.sub(" ", row[0]))
            labels.append(ids[row[1]])
    return (texts[:train_rows], labels[:train_rows], texts[train_rows:], labels[train_rows:],
            list(IMDB_CLASSES))


def load_imdb(root: Optional[PathLike] = None, csv_train_rows: int = 25_000) -> TextSplits:
    """IMDB movie reviews (Maas et al. 2011), labels neg=0, pos=1; ``<br />`` tags become spaces.

    Two layouts are accepted, looked for in ``root`` (the Stanford one first):

    * the Stanford ``aclImdb`` folder (``root/aclImdb`` or ``root``): ``train/{neg,pos}/*.txt`` and
      ``test/{neg,pos}/*.txt``, the official 25k/25k split; within a split the negative reviews
      come first, each class in file-name order;
    * the 50k-review CSV ``IMDB Dataset.csv`` (header ``review,sentiment``, values
      ``positive``/``negative``; ``root`` may also be that file). It has no official split: the
      first ``csv_train_rows`` rows are the training set, the rest the test set.
    """
    base = data_root("imdb", root)
    if base.is_file():
        return _read_imdb_csv(base, csv_train_rows)
    for folder in (base / "aclImdb", base):
        if all((folder / s / c).is_dir() for s in ("train", "test") for c in IMDB_CLASSES):
            train, test = _read_acl_split(folder / "train"), _read_acl_split(folder / "test")
            return train[0], train[1], test[0], test[1], list(IMDB_CLASSES)
    if (base / IMDB_CSV).is_file():
        return _read_imdb_csv(base / IMDB_CSV, csv_train_rows)
    raise FileNotFoundError(
        f"imdb: expected the folders train/pos, train/neg, test/pos, test/neg of aclImdb in "
        f"{base / 'aclImdb'} or {base}, or the file {base / IMDB_CSV}; download {IMDB_URL} and put it in "
        f"{where_to_put('imdb')}"
    )


def _read_sst2_tsv(path: Path) -> tuple[list[str], list[int]]:
    texts: list[str] = []
    labels: list[int] = []
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in _rows_under_header(f, path, ["sentence", "label"], delimiter="\t",
                                            quoting=csv.QUOTE_NONE):
            labels.append(_label(row[1], len(SST2_CLASSES), path, line, first=0))
            texts.append(row[0])
    return texts, labels


def load_sst2(root: Optional[PathLike] = None) -> TextSplits:
    """SST-2 from GLUE: ``train.tsv`` and ``dev.tsv`` in ``root/SST-2`` or ``root``.

    Tab-separated with the header ``sentence<TAB>label`` (0 negative, 1 positive), no quoting;
    sentences are returned unchanged. GLUE's ``test.tsv`` has no labels, so the **dev** set is
    returned as the test split.
    """
    base, files = data_root("sst2", root), ("train.tsv", "dev.tsv")
    folder = _find(base, "SST-2", files)
    if folder is None:
        raise _missing("sst2", base, "SST-2", files, SST2_URL)
    train, dev = _read_sst2_tsv(folder / "train.tsv"), _read_sst2_tsv(folder / "dev.tsv")
    return train[0], train[1], dev[0], dev[1], list(SST2_CLASSES)
