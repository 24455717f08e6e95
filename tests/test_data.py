"""Tests of reversible.data: loaders (digits, IDX/MNIST, Omniglot zips), split, batches."""

import gzip
import io
import struct
import zipfile

import numpy as np
import pytest
from PIL import Image

from reversible import data as D


# ----------------------------------------------------------------------------- digits / split


def test_digits_shapes_and_range():
    d = D.load_digits()
    from sklearn.datasets import load_digits
    ref = load_digits()
    assert d.X.shape == (1797, 64) and d.X.dtype == np.float64
    assert d.y.shape == (1797,) and d.y.dtype == np.int64
    assert d.X.min() == 0.0 and d.X.max() == 1.0
    assert np.array_equal(d.X * 16, ref.data) and np.array_equal(d.y, ref.target)
    assert d.n_classes == 10 and d.image_shape == (8, 8) and d.name == "digits"


def test_split_deterministic_disjoint_and_checked():
    d = D.load_digits()
    a1, b1, c1 = D.split(d, [100, 50, 30], seed=3)
    a2, b2, c2 = D.split(d, [100, 50, 30], seed=3)
    a3, _, _ = D.split(d, [100, 50, 30], seed=4)
    assert np.array_equal(a1.X, a2.X) and np.array_equal(c1.y, c2.y)
    assert not np.array_equal(a1.X, a3.X)
    assert (a1.n, b1.n, c1.n) == (100, 50, 30)
    # disjoint: tag each example with its index as its only feature
    tagged = D.Dataset(np.arange(d.n, dtype=float)[:, None] / d.n, d.y, 10)
    parts = D.split(tagged, [100, 50, 30], seed=3)
    ids = np.concatenate([np.rint(p.X[:, 0] * d.n) for p in parts])
    assert len(np.unique(ids)) == 180
    assert np.array_equal(parts[1].y, b1.y)
    perm = np.random.default_rng(3).permutation(d.n)
    assert np.array_equal(a1.X, d.X[perm[:100]]) and np.array_equal(b1.y, d.y[perm[100:150]])
    with pytest.raises(ValueError, match="only 1797"):
        D.split(d, [1000, 800])
    with pytest.raises(ValueError, match="non-negative"):
        D.split(d, [10, -1])


def test_dataset_validation():
    with pytest.raises(ValueError, match="labels must lie"):
        D.Dataset(np.zeros((3, 2)), np.array([0, 1, 5]), 3)
    with pytest.raises(ValueError, match="y must have shape"):
        D.Dataset(np.zeros((3, 2)), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="image_shape"):
        D.Dataset(np.zeros((3, 2)), np.array([0, 1, 2]), 3, (2, 2))


def test_one_hot():
    y = np.array([2, 0, 1, 2])
    oh = D.one_hot(y, 4)
    assert oh.shape == (4, 4)
    assert np.array_equal(oh, np.eye(4)[y])
    with pytest.raises(ValueError):
        D.one_hot(np.array([0, 4]), 4)


def test_load_dataset_dispatch_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path))      # nothing downloaded there
    d = D.load_dataset("digits", n=10)
    assert d.n == 10 and np.array_equal(d.X, D.load_digits().X[:10])
    with pytest.raises(ValueError, match="unknown dataset"):
        D.load_dataset("cifar")
    with pytest.raises(ValueError, match="mnist_dir"):
        D.load_dataset("mnist")
    with pytest.raises(ValueError, match="zip"):
        D.load_dataset("omniglot")
    with pytest.raises(ValueError, match="exceeds"):
        D.load_dataset("digits", n=10 ** 6)


# ----------------------------------------------------------------------------- batch_indices


def _reference_stream(n, seed, epochs):
    """Independent definition: concatenated per-epoch Philox permutations."""
    return np.concatenate([
        np.random.Generator(np.random.Philox(key=np.array([seed, e], dtype=np.uint64))).permutation(n)
        for e in range(epochs)])


@pytest.mark.parametrize("n,b", [(12, 4), (10, 3), (7, 7), (5, 1)])
def test_batch_indices_matches_stream_definition(n, b):
    seed = 11
    steps = 4 * n // b
    stream = _reference_stream(n, seed, 5)
    for t in range(steps):
        assert np.array_equal(D.batch_indices(n, b, seed, t), stream[t * b:(t + 1) * b])
    # each epoch's positions cover every example exactly once
    got = np.concatenate([D.batch_indices(n, b, seed, t) for t in range(steps)])
    for e in range(len(got) // n):
        assert sorted(got[e * n:(e + 1) * n]) == list(range(n))


def test_batch_indices_pure_and_seeded():
    a = [D.batch_indices(50, 7, 1, t) for t in (30, 2, 17)]
    D._epoch_permutation.cache_clear()
    b = [D.batch_indices(50, 7, 1, t) for t in (17, 2, 30)][::-1]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(D.batch_indices(50, 7, 1, 0), D.batch_indices(50, 7, 2, 0))
    out = D.batch_indices(50, 7, 1, 3)
    out[:] = -1                                   # the caller may modify its copy
    assert D.batch_indices(50, 7, 1, 3).min() >= 0


def test_batch_indices_in_order():
    assert np.array_equal(D.batch_indices(10, 4, 0, 0, shuffle=False), [0, 1, 2, 3])
    assert np.array_equal(D.batch_indices(10, 4, 0, 2, shuffle=False), [8, 9, 0, 1])
    assert np.array_equal(D.batch_indices(10, 4, 9, 3, shuffle=False), [2, 3, 4, 5])


@pytest.mark.parametrize("args", [(0, 1, 0, 0), (5, 6, 0, 0), (5, 0, 0, 0), (5, 2, -1, 0),
                                  (5, 2, 0, -1), (5, 2, 0, 1.5), (5.0, 2, 0, 0)])
def test_batch_indices_rejects_bad_arguments(args):
    with pytest.raises(ValueError, match="batch_indices"):
        D.batch_indices(*args)


# ----------------------------------------------------------------------------- IDX / MNIST


def _idx_bytes(arr, magic_override=None):
    arr = np.asarray(arr, dtype=np.uint8)
    magic = 0x0800 + arr.ndim if magic_override is None else magic_override
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in arr.shape) + arr.tobytes()


def _write(path, payload, gz):
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_synthetic(tmp_path, gz):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    labs = rng.integers(0, 10, size=6, dtype=np.uint8)
    _write(tmp_path / "t10k-images-idx3-ubyte", _idx_bytes(imgs), gz)
    _write(tmp_path / "t10k-labels-idx1-ubyte", _idx_bytes(labs), gz)
    d = D.load_mnist(tmp_path)
    assert d.X.shape == (6, 784) and d.image_shape == (28, 28) and d.n_classes == 10
    assert np.array_equal(d.X * 255, imgs.reshape(6, -1)) and np.array_equal(d.y, labs)
    assert D.load_mnist(tmp_path, n=2).n == 2
    assert np.array_equal(D.load_dataset("mnist", mnist_dir=tmp_path, n=3).y, labs[:3])
    # a train pair comes first, then t10k
    train = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    _write(tmp_path / "train-images-idx3-ubyte", _idx_bytes(train), gz)
    _write(tmp_path / "train-labels-idx1-ubyte", _idx_bytes(np.array([1, 2, 3])), gz)
    d = D.load_mnist(tmp_path)
    assert d.n == 9 and np.array_equal(d.y[:3], [1, 2, 3])
    assert np.array_equal(d.X[:3] * 255, train.reshape(3, -1))


def _mnist_dir(tmp_path, images_payload=None, labels_payload=None, n=4):
    imgs = np.zeros((n, 28, 28), np.uint8)
    labs = np.arange(n, dtype=np.uint8) % 10
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(images_payload or _idx_bytes(imgs))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(labels_payload or _idx_bytes(labs))
    return tmp_path


def test_mnist_errors_name_the_file(tmp_path):
    good = _idx_bytes(np.zeros((4, 28, 28), np.uint8))
    cases = {
        "truncated": (good[:-5], None, "truncated"),
        "trailing": (good + b"xx", None, "trailing"),
        "wrong magic": (None, _idx_bytes(np.zeros((4, 28, 28), np.uint8)), "expected 2049"),
        "short header": (good[:10], None, "truncated"),
        "tiny": (good[:2], None, "too short"),
        "label count": (None, _idx_bytes(np.zeros(3, np.uint8)), "labels"),
        "bad label": (None, _idx_bytes(np.array([0, 1, 2, 12], np.uint8)), "label 12"),
        "wrong dims": (_idx_bytes(np.zeros((4, 27, 28), np.uint8)), None, "28, 28"),
    }
    for i, (name, (img, lab, msg)) in enumerate(cases.items()):
        d = tmp_path / f"case{i}"
        d.mkdir()
        _mnist_dir(d, img, lab)
        with pytest.raises(ValueError, match=msg) as info:
            D.load_mnist(d)
        assert "idx" in str(info.value), name


def test_mnist_corrupt_gzip_and_missing_files(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(np.zeros(4, np.uint8))))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
        D.load_mnist(tmp_path)
    full = gzip.compress(_idx_bytes(np.zeros((4, 28, 28), np.uint8)))
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(full[:len(full) // 2])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
        D.load_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte"):
        D.load_mnist(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no MNIST"):
        D.load_mnist(empty)
    with pytest.raises(ValueError, match="does not exist"):
        D.load_mnist(tmp_path / "nope")


def test_mnist_real(shared_data):
    d = D.load_mnist(shared_data / "mnist")
    assert d.X.shape == (10000, 784) and d.y.shape == (10000,)
    assert 0.0 <= d.X.min() and d.X.max() <= 1.0
    assert np.array_equal(np.bincount(d.y, minlength=10) > 800, np.ones(10, bool))
    # the raw bytes after the 16-byte header are the pixels, independently decoded
    raw = gzip.open(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz").read()
    assert np.array_equal(d.X[0] * 255, np.frombuffer(raw[16:16 + 784], np.uint8))
    assert D.load_mnist(shared_data / "mnist", n=500).n == 500


# ----------------------------------------------------------------------------- Omniglot


def _png(mask):
    """PNG bytes of a mode-'1' image: True pixels are ink (black on white)."""
    buf = io.BytesIO()
    Image.fromarray(~mask).convert("1").save(buf, format="PNG")
    return buf.getvalue()


def _make_zip(path, top, images):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{top}/", b"")
        for (alpha, char, fname), mask in images.items():
            zf.writestr(f"{top}/{alpha}/{char}/{fname}", _png(mask))


def test_omniglot_synthetic_zips(tmp_path):
    rng = np.random.default_rng(0)
    masks = {k: rng.random((10, 10)) < 0.3 for k in [
        ("Zeta", "character01", "01_01.png"), ("Zeta", "character01", "01_02.png"),
        ("Zeta", "character02", "02_01.png"), ("Alpha", "character01", "03_01.png"),
        ("Beta", "character01", "04_01.png"), ("Beta", "character02", "05_01.png"),
    ]}
    z1 = {k: v for k, v in masks.items() if k[0] in ("Zeta", "Alpha")}
    z2 = {k: v for k, v in masks.items() if k[0] in ("Zeta", "Beta") and k[2] != "01_02.png"}
    _make_zip(tmp_path / "a.zip", "images_background_small1", z1)
    _make_zip(tmp_path / "b.zip", "images_background_small2", z2)
    o = D.load_omniglot([tmp_path / "a.zip", tmp_path / "b.zip"], size=10)
    assert isinstance(o, D.Dataset)
    assert o.alphabet_names == ["Alpha", "Beta", "Zeta"]
    assert o.n == 6 and o.n_classes == 5          # Zeta merged: its shared file counted once
    order = sorted(masks, key=lambda k: (k[0], k[1], k[2]))
    for i, k in enumerate(order):
        assert np.array_equal(o.X[i], masks[k].reshape(-1).astype(float)), k
    assert list(o.y) == [0, 1, 2, 3, 3, 4]
    assert list(o.alphabet) == [0, 1, 1, 2, 2, 2]
    assert list(o.character) == [0, 0, 1, 0, 0, 1]
    # downsampling 10 -> 5 averages 2x2 blocks of ink
    o5 = D.load_omniglot(tmp_path, size=5)            # a folder of zips works too
    m = masks[order[0]].astype(float)
    assert np.allclose(o5.X[0], m.reshape(5, 2, 5, 2).mean(axis=(1, 3)).reshape(-1))
    # alphabet selection keeps the given order; split keeps per-image fields
    sel = D.load_omniglot(tmp_path / "b.zip", size=10, alphabets=["Zeta", "Beta"])
    assert sel.alphabet_names == ["Zeta", "Beta"] and list(sel.alphabet) == [0, 0, 1, 1]
    assert list(sel.y) == [0, 1, 2, 3]
    (part,) = D.split(o, [3], seed=1)
    perm = np.random.default_rng(1).permutation(6)[:3]
    assert np.array_equal(part.alphabet, o.alphabet[perm]) and part.alphabet_names == o.alphabet_names
    with pytest.raises(ValueError, match="unknown Omniglot alphabet"):
        D.load_omniglot(tmp_path / "a.zip", alphabets=["Klingon"])
    with pytest.raises(ValueError, match="alphabets is empty"):
        D.load_omniglot(tmp_path / "a.zip", alphabets=[])
    # load_dataset: a seeded random subset kept in file order
    sub = D.load_dataset("omniglot", omniglot_zip=tmp_path, n=4)
    keep = np.sort(np.random.default_rng(0).permutation(6)[:4])
    assert np.array_equal(sub.y, o.y[keep]) and sub.X.shape == (4, 28 * 28)


def test_omniglot_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        D.load_omniglot(tmp_path / "missing.zip")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.zip"):
        D.load_omniglot(tmp_path / "bad.zip")
    with zipfile.ZipFile(tmp_path / "png.zip", "w") as zf:
        zf.writestr("top/A/character01/x.png", b"garbage")
    with pytest.raises(ValueError, match="x.png"):
        D.load_omniglot(tmp_path / "png.zip")


def test_omniglot_real(shared_data):
    zips = sorted((shared_data / "omniglot").glob("*.zip"))
    files = set()
    for z in zips:
        with zipfile.ZipFile(z) as zf:
            files |= {tuple(n.split("/")[1:]) for n in zf.namelist() if n.endswith(".png")}
    o = D.load_omniglot(zips, alphabets=["Greek", "Tagalog"])
    expect = sorted(f for f in files if f[0] in ("Greek", "Tagalog"))
    assert o.n == len(expect) and o.X.shape == (len(expect), 784)
    assert o.n_classes == len({f[:2] for f in expect})
    assert o.X.min() >= 0 and o.X.max() <= 1
    assert 0.02 < o.X.mean() < 0.3                 # ink is the minority, and it is 1
    assert o.alphabet_names == ["Greek", "Tagalog"]


# ----------------------------------------------------------------------------- downloads


def _publish(tmp_path, files):
    """Write ``{name: bytes}`` to a mirror folder; return the folder and the RemoteFile table."""
    import hashlib
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    table = []
    for name, payload in files.items():
        (mirror / name).write_bytes(payload)
        table.append(D.RemoteFile(name, len(payload), hashlib.sha256(payload).hexdigest()))
    return mirror, tuple(table)


def _synthetic_mnist_files():
    imgs = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    return {"t10k-images-idx3-ubyte.gz": gzip.compress(_idx_bytes(imgs)),
            "t10k-labels-idx1-ubyte.gz": gzip.compress(_idx_bytes(np.array([4, 5, 6], np.uint8)))}


class _Server:
    """A local HTTP server on 127.0.0.1 serving one folder; counts GET requests."""

    def __init__(self, folder):
        import functools
        import http.server
        import threading
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.requests = []
        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_over_http_verifies_and_skips_verified_files(tmp_path, monkeypatch):
    mirror, table = _publish(tmp_path, _synthetic_mnist_files())
    monkeypatch.setitem(D.DATASETS, "mnist", (table, ("http://127.0.0.1:9/unused/",)))
    target = tmp_path / "data" / "mnist"
    with _Server(mirror) as server:
        assert D.download_mnist(target, base_url=server.url, progress=False) == target
        assert sorted(server.requests) == ["/t10k-images-idx3-ubyte.gz", "/t10k-labels-idx1-ubyte.gz"]
        assert D.download("mnist", target, base_url=server.url, progress=False) == target
        assert len(server.requests) == 2                      # verified files: nothing fetched
    d = D.load_mnist(target)
    assert np.array_equal(d.y, [4, 5, 6])
    assert sorted(p.name for p in target.iterdir()) == sorted(f.name for f in table)


def test_download_from_a_file_url_and_default_directory(tmp_path, monkeypatch):
    mirror, table = _publish(tmp_path, _synthetic_mnist_files())
    monkeypatch.setitem(D.DATASETS, "mnist", (table, (mirror.as_uri() + "/",)))
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path / "home-data"))
    assert D.default_data_dir() == tmp_path / "home-data"
    assert D.downloaded("mnist") is None
    with pytest.raises(ValueError, match="reversible download mnist"):
        D.load_mnist()
    folder = D.download_mnist(progress=False)                # default mirror list and directory
    assert folder == tmp_path / "home-data" / "mnist" and D.downloaded("mnist") == folder
    assert np.array_equal(D.load_mnist().y, [4, 5, 6])      # loaders default to that folder
    assert np.array_equal(D.load_dataset("mnist").y, [4, 5, 6])


def test_download_replaces_a_damaged_file(tmp_path, monkeypatch):
    mirror, table = _publish(tmp_path, _synthetic_mnist_files())
    monkeypatch.setitem(D.DATASETS, "mnist", (table, (mirror.as_uri() + "/",)))
    target = D.download_mnist(tmp_path / "d", progress=False)
    damaged = target / "t10k-labels-idx1-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:-3] + b"xyz")
    D.download_mnist(tmp_path / "d", progress=False)
    assert damaged.read_bytes() == (mirror / damaged.name).read_bytes()


def test_download_refuses_a_file_that_is_not_the_published_one(tmp_path, monkeypatch):
    mirror, table = _publish(tmp_path, _synthetic_mnist_files())
    (mirror / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b tampered" + bytes(20))
    monkeypatch.setitem(D.DATASETS, "mnist", (table, (mirror.as_uri() + "/",)))
    with pytest.raises(D.DownloadError, match="SHA-256") as info:
        D.download_mnist(tmp_path / "d", progress=False)
    assert table[1].sha256 in str(info.value)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["t10k-images-idx3-ubyte.gz"]


def test_download_offline_says_how_to_place_the_files_by_hand(tmp_path, monkeypatch):
    import socket
    with socket.socket() as s:                               # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
    with pytest.raises(D.DownloadError) as info:
        D.download_omniglot(tmp_path / "o", base_url=dead, progress=False)
    msg = str(info.value)
    assert dead + "images_background_small1.zip" in msg
    assert str(tmp_path / "o") in msg and "reversible download omniglot" in msg
    assert D.OMNIGLOT_FILES[0].sha256 in msg
    assert list((tmp_path / "o").iterdir()) == []


def test_unknown_data_set_name(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        D.download("cifar", tmp_path)


def test_pinned_hashes_match_the_official_files(shared_data, tmp_path):
    """The shared copies are the published files: the pins match them, and a download from a
    file:// mirror of them verifies and loads."""
    import hashlib
    for f in D.MNIST_FILES:
        p = shared_data / "mnist" / f.name
        if p.is_file():
            assert (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()) == (f.size, f.sha256)
    folder = D.download_omniglot(tmp_path / "o", base_url=(shared_data / "omniglot").as_uri(),
                                 progress=False)
    assert D.downloaded("omniglot", folder) == folder
    o = D.load_omniglot(folder, alphabets=["Korean"])
    assert o.alphabet_names == ["Korean"] and o.n == 20 * o.n_classes
