"""Data sets and deterministic minibatches.

* :func:`load_digits` - scikit-learn's bundled 8x8 digits (the embedded default);
* :func:`load_mnist` - MNIST from IDX files (``.gz`` or raw) in a user-given folder;
* :func:`load_omniglot` - Omniglot PNGs read from zip archives in memory;
* :func:`split`, :func:`one_hot`;
* :func:`batch_indices` - minibatch indices as a pure function of ``(seed, t)``,
  which exact reversal needs: the reverse pass must see the forward pass's batch.

Every loader returns a :class:`Dataset` whose ``X`` is float64 in ``[0, 1]``
with one flattened image per row.
"""

import dataclasses
import functools
import gzip
import io
import os
import pathlib
import zipfile
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Dataset", "OmniglotData", "load_digits", "load_mnist", "read_idx", "load_omniglot",
           "load_dataset", "split", "one_hot", "batch_indices"]


@dataclass
class Dataset:
    """A labelled image set: ``X`` float64 (n, d) in [0, 1], ``y`` int64 (n,) in [0, n_classes)."""

    X: np.ndarray
    y: np.ndarray
    n_classes: int
    image_shape: tuple = None
    name: str = ""

    #: fields holding one entry per example (indexed together by :meth:`subset`)
    per_example = ("X", "y")

    def __post_init__(self):
        self.X = np.asarray(self.X, dtype=np.float64)
        self.y = np.asarray(self.y)
        if self.X.ndim != 2:
            raise ValueError(f"Dataset {self.name!r}: X must be 2-D (n, d); got shape {self.X.shape}")
        if self.y.ndim != 1 or self.y.shape[0] != self.X.shape[0]:
            raise ValueError(f"Dataset {self.name!r}: y must have shape ({self.X.shape[0]},) to "
                             f"match X; got {self.y.shape}")
        if self.y.size and not np.issubdtype(self.y.dtype, np.integer):
            raise ValueError(f"Dataset {self.name!r}: y must hold integer labels; got {self.y.dtype}")
        self.y = self.y.astype(np.int64)
        self.n_classes = int(self.n_classes)
        if self.y.size and (self.y.min() < 0 or self.y.max() >= self.n_classes):
            raise ValueError(f"Dataset {self.name!r}: labels must lie in [0, {self.n_classes}); "
                             f"got range [{self.y.min()}, {self.y.max()}]")
        if self.image_shape is not None:
            self.image_shape = tuple(int(s) for s in self.image_shape)
            if int(np.prod(self.image_shape)) != self.X.shape[1]:
                raise ValueError(f"Dataset {self.name!r}: image_shape {self.image_shape} does not "
                                 f"match {self.X.shape[1]} features")

    @property
    def n(self):
        """Number of examples."""
        return self.X.shape[0]

    @property
    def d(self):
        """Number of features (pixels) per example."""
        return self.X.shape[1]

    def __len__(self):
        return self.n

    def subset(self, index, name=None):
        """A new data set of the examples at ``index`` (an int array or slice)."""
        changes = {f: getattr(self, f)[index] for f in self.per_example}
        if name is not None:
            changes["name"] = name
        return dataclasses.replace(self, **changes)


@dataclass
class OmniglotData(Dataset):
    """Omniglot images: ``y`` is the character class over all alphabets.

    ``alphabet`` (int per image) indexes ``alphabet_names``; ``character`` (int
    per image) is the character's index within its alphabet.
    """

    alphabet: np.ndarray = None
    alphabet_names: list = field(default_factory=list)
    character: np.ndarray = None

    per_example = ("X", "y", "alphabet", "character")

    def __post_init__(self):
        super().__post_init__()
        n = self.X.shape[0]
        for f in ("alphabet", "character"):
            v = np.zeros(n, np.int64) if getattr(self, f) is None else np.asarray(getattr(self, f))
            if v.shape != (n,):
                raise ValueError(f"OmniglotData: {f} must have shape ({n},); got {v.shape}")
            setattr(self, f, v.astype(np.int64))
        self.alphabet_names = list(self.alphabet_names)


# ----------------------------------------------------------------------------- digits


def load_digits():
    """scikit-learn's bundled 8x8 digits: 1,797 images, pixels scaled from [0, 16] to [0, 1]."""
    from sklearn.datasets import load_digits as _sk_digits
    d = _sk_digits()
    return Dataset(d.data.astype(np.float64) / 16.0, d.target.astype(np.int64), 10, (8, 8), "digits")


# ----------------------------------------------------------------------------- MNIST (IDX)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path):
    path = pathlib.Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ValueError(f"cannot read {path}: {e} (corrupt or truncated file? "
                         "download it again)") from e


def read_idx(path, expect_magic=None):
    """Read one IDX file (raw or ``.gz``) into an array, validating header and size.

    ``expect_magic`` (e.g. 2051 for images, 2049 for labels), if given, must
    match the file's magic number.
    """
    path = pathlib.Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: only {len(raw)} bytes, too short for an IDX header (truncated?)")
    magic = int.from_bytes(raw[:4], "big")
    if expect_magic is not None and magic != expect_magic:
        raise ValueError(f"{path}: magic number {magic}, expected {expect_magic} "
                         "(wrong file, or not an IDX file)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] < 1:
        raise ValueError(f"{path}: magic number {magic} is not a valid IDX header")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: header needs {header} bytes but the file has {len(raw)} (truncated)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: dimensions {dims} need {expected} bytes but the file has "
                         f"{len(raw)} ({'truncated' if len(raw) < expected else 'trailing data'})")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find_idx(directory, stem):
    for name in (stem, stem + ".gz"):
        p = directory / name
        if p.is_file():
            return p
    return None


def load_mnist(directory, n=None):
    """MNIST from the IDX files in ``directory`` (``.gz`` or raw).

    Reads ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` when
    present, then ``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte``, and
    concatenates them in that order; ``n`` keeps the first ``n`` images.
    Pixels are scaled to [0, 1]; ``image_shape`` is (28, 28).
    """
    if directory is None:
        raise ValueError("load_mnist needs the directory holding the MNIST IDX files "
                         "(e.g. t10k-images-idx3-ubyte.gz); pass mnist_dir=...")
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise ValueError(f"MNIST directory {directory} does not exist")
    Xs, ys = [], []
    for part in ("train", "t10k"):
        img_p = _find_idx(directory, f"{part}-images-idx3-ubyte")
        lab_p = _find_idx(directory, f"{part}-labels-idx1-ubyte")
        if img_p is None and lab_p is None:
            continue
        if img_p is None or lab_p is None:
            missing = f"{part}-images-idx3-ubyte" if img_p is None else f"{part}-labels-idx1-ubyte"
            raise ValueError(f"{directory}: found one {part} file but not {missing}[.gz]")
        images = read_idx(img_p, expect_magic=2051)
        labels = read_idx(lab_p, expect_magic=2049)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"{img_p}: expected uint8 images of shape (N, 28, 28); "
                             f"got {images.dtype} {images.shape}")
        if labels.dtype != np.uint8 or labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"{lab_p}: expected {images.shape[0]} uint8 labels to match {img_p}; "
                             f"got {labels.dtype} {labels.shape}")
        if labels.size and labels.max() > 9:
            raise ValueError(f"{lab_p}: label {labels.max()} outside 0..9")
        Xs.append(images.reshape(images.shape[0], -1))
        ys.append(labels)
    if not Xs:
        raise ValueError(f"no MNIST IDX files in {directory}: expected t10k-images-idx3-ubyte[.gz] "
                         "and t10k-labels-idx1-ubyte[.gz] (and/or the train-* pair)")
    X = np.concatenate(Xs)
    y = np.concatenate(ys)
    if n is not None:
        n = _check_count(n, X.shape[0], "n")
        X, y = X[:n], y[:n]
    return Dataset(X.astype(np.float64) / 255.0, y.astype(np.int64), 10, (28, 28), "mnist")


# ----------------------------------------------------------------------------- Omniglot


def _zip_list(zip_paths):
    if zip_paths is None:
        raise ValueError("load_omniglot needs the Omniglot zip archive(s) "
                         "(e.g. images_background_small1.zip) or a folder holding them")
    if isinstance(zip_paths, (str, os.PathLike)):
        zip_paths = [zip_paths]
    out = []
    for p in zip_paths:
        p = pathlib.Path(p)
        if p.is_dir():
            found = sorted(p.glob("*.zip"))
            if not found:
                raise ValueError(f"no .zip archives in {p}")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise ValueError(f"Omniglot archive {p} does not exist")
    if not out:
        raise ValueError("load_omniglot: empty list of zip archives")
    return out


def _ink_image(png_bytes, size, where):
    from PIL import Image
    try:
        with Image.open(io.BytesIO(png_bytes)) as im:
            gray = im.convert("L")
    except Exception as e:  # PIL raises several types for bad images
        raise ValueError(f"{where}: cannot decode PNG ({e})") from e
    ink = 1.0 - np.asarray(gray, dtype=np.float32) / 255.0           # strokes are dark on white
    if ink.shape != (size, size):
        # area average in float (mode "F"), so no rounding to 8 bits
        ink = np.asarray(Image.fromarray(ink).resize((size, size), Image.Resampling.BOX))
    return np.clip(ink.astype(np.float64).reshape(-1), 0.0, 1.0)


def load_omniglot(zip_paths, size=28, alphabets=None):
    """Omniglot drawings read in memory from zip archives (nothing is extracted).

    ``zip_paths``: one archive, a list of them, or a folder of ``*.zip``; each
    holds ``<top>/<alphabet>/<character>/<id>_<drawer>.png``.  An alphabet
    present in several archives is merged by name (a file at the same
    alphabet/character/name path is kept once).  Images become ``size x size``
    by area averaging, with ink as 1.  ``alphabets`` (names) keeps only those,
    in the given order; otherwise alphabets are sorted by name.  Classes
    ``y`` number the characters alphabet by alphabet.
    """
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be a positive int; got {size}")
    entries = {}                                  # (alphabet, character, file) -> (zip, member)
    for zp in _zip_list(zip_paths):
        try:
            zf = zipfile.ZipFile(zp)
        except (zipfile.BadZipFile, OSError) as e:
            raise ValueError(f"{zp}: not a readable zip archive ({e})") from e
        with zf:
            for member in zf.namelist():
                parts = member.split("/")
                if len(parts) < 4 or not parts[-1].lower().endswith(".png"):
                    continue
                key = tuple(parts[-3:])
                entries.setdefault(key, (zp, member))
    if not entries:
        raise ValueError(f"no <alphabet>/<character>/<file>.png entries in {zip_paths}")
    available = sorted({k[0] for k in entries})
    if alphabets is None:
        names = available
    else:
        names = [alphabets] if isinstance(alphabets, str) else list(alphabets)
        if not names:
            raise ValueError(f"alphabets is empty; give names from {available} or None for all")
        unknown = [a for a in names if a not in available]
        if unknown:
            raise ValueError(f"unknown Omniglot alphabet(s) {unknown}; available: {available}")
        if len(set(names)) != len(names):
            raise ValueError(f"alphabets lists a name twice: {names}")
    keys = sorted((k for k in entries if k[0] in set(names)),
                  key=lambda k: (names.index(k[0]), k[1], k[2]))
    char_index, class_index = {}, {}
    for a, c, _ in keys:
        if (a, c) not in class_index:
            char_index[(a, c)] = sum(1 for (aa, _) in class_index if aa == a)
            class_index[(a, c)] = len(class_index)
    X = np.empty((len(keys), size * size))
    open_zips = {}
    try:
        for i, key in enumerate(keys):
            zp, member = entries[key]
            if zp not in open_zips:
                open_zips[zp] = zipfile.ZipFile(zp)
            try:
                data = open_zips[zp].read(member)
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise ValueError(f"{zp}: cannot read {member} ({e})") from e
            X[i] = _ink_image(data, size, f"{zp}:{member}")
    finally:
        for zf in open_zips.values():
            zf.close()
    y = np.array([class_index[k[:2]] for k in keys], np.int64)
    alphabet = np.array([names.index(k[0]) for k in keys], np.int64)
    character = np.array([char_index[k[:2]] for k in keys], np.int64)
    return OmniglotData(X, y, len(class_index), (size, size), "omniglot",
                        alphabet=alphabet, alphabet_names=names, character=character)


# ----------------------------------------------------------------------------- helpers


def load_dataset(name="digits", mnist_dir=None, omniglot_zip=None, n=None):
    """Load ``"digits"`` (bundled), ``"mnist"`` (needs ``mnist_dir``) or ``"omniglot"``
    (needs ``omniglot_zip``).

    ``n`` keeps ``n`` examples: the first ``n`` for digits and MNIST; for
    Omniglot (stored sorted by class) a random subset drawn with seed 0, kept
    in file order.
    """
    if name == "digits":
        data = load_digits()
    elif name == "mnist":
        return load_mnist(mnist_dir, n=n)
    elif name == "omniglot":
        data = load_omniglot(omniglot_zip)
        if n is not None:
            n = _check_count(n, data.n, "n")
            keep = np.sort(np.random.default_rng(0).permutation(data.n)[:n])
            return data.subset(keep)
        return data
    else:
        raise ValueError(f"unknown dataset {name!r}; choose 'digits', 'mnist' or 'omniglot'")
    if n is not None:
        data = data.subset(slice(0, _check_count(n, data.n, "n")))
    return data


def _check_count(n, limit, what):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{what} must be a positive int; got {n!r}")
    if n > limit:
        raise ValueError(f"{what}={n} exceeds the {limit} examples available")
    return int(n)


def split(dataset, sizes, seed=0):
    """Disjoint random subsets of the given ``sizes`` (one permutation from ``seed``).

    Returns a tuple of data sets named ``<name>[i]``; ``sum(sizes)`` may not
    exceed the number of examples.
    """
    sizes = [int(s) for s in sizes]
    if any(s < 0 for s in sizes):
        raise ValueError(f"split sizes must be non-negative; got {sizes}")
    if sum(sizes) > dataset.n:
        raise ValueError(f"split sizes {sizes} add up to {sum(sizes)} but {dataset.name!r} "
                         f"has only {dataset.n} examples")
    perm = np.random.default_rng(seed).permutation(dataset.n)
    out, start = [], 0
    for i, s in enumerate(sizes):
        out.append(dataset.subset(perm[start:start + s], name=f"{dataset.name}[{i}]"))
        start += s
    return tuple(out)


def one_hot(y, n_classes):
    """Float64 one-hot rows (n, n_classes) for integer labels ``y``."""
    y = np.asarray(y)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"one_hot needs a 1-D int label array; got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}); got [{y.min()}, {y.max()}]")
    out = np.zeros((y.shape[0], int(n_classes)))
    out[np.arange(y.shape[0]), y] = 1.0
    return out


@functools.lru_cache(maxsize=16)
def _epoch_permutation(n, seed, epoch):
    perm = np.random.Generator(np.random.Philox(key=np.array([seed, epoch], np.uint64))).permutation(n)
    perm.flags.writeable = False
    return perm


def batch_indices(n, batch_size, seed, t, shuffle=True):
    """Indices of the minibatch for step ``t``: a pure function of its arguments.

    The data are read as one stream of epochs: position ``p`` maps to example
    ``perm_e[p mod n]`` with ``e = p // n`` and ``perm_e`` drawn from
    ``Generator(Philox(key=(seed, e)))``; step ``t`` takes positions
    ``t*batch_size .. t*batch_size + batch_size - 1`` (so a batch that crosses
    an epoch boundary finishes one epoch and starts the next).  With
    ``shuffle=False`` the permutation is the identity.
    """
    for name, v in (("n", n), ("batch_size", batch_size), ("seed", seed), ("t", t)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"batch_indices: {name} must be an int; got {v!r}")
    n, batch_size, seed, t = int(n), int(batch_size), int(seed), int(t)
    if n < 1:
        raise ValueError(f"batch_indices: n must be >= 1; got {n}")
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_indices: batch_size must be in [1, n={n}]; got {batch_size}")
    if seed < 0 or t < 0:
        raise ValueError(f"batch_indices: seed and t must be non-negative; got seed={seed}, t={t}")
    start = t * batch_size
    pos = (start % n) + np.arange(batch_size)
    if not shuffle:
        return pos % n
    e0 = start // n
    if pos[-1] < n:
        return _epoch_permutation(n, seed, e0)[pos].copy()
    first = pos < n
    out = np.empty(batch_size, np.int64)
    out[first] = _epoch_permutation(n, seed, e0)[pos[first]]
    out[~first] = _epoch_permutation(n, seed, e0 + 1)[pos[~first] - n]
    return out
