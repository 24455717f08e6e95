"""Data sets and deterministic minibatches.

* :func:`load_digits` - scikit-learn's bundled 8x8 digits (the embedded default);
* :func:`load_mnist` - MNIST from IDX files (``.gz`` or raw) in a user-given folder;
* :func:`load_omniglot` - Omniglot PNGs read from zip archives in memory;
* :func:`download_mnist`, :func:`download_omniglot` (:func:`download`) - fetch the
  published files into :func:`default_data_dir`, verified by SHA-256;
* :func:`split`, :func:`one_hot`;
* :func:`batch_indices` - minibatch indices as a pure function of ``(seed, t)``,
  which exact reversal needs: the reverse pass must see the forward pass's batch.

Every loader returns a :class:`Dataset` whose ``X`` is float64 in ``[0, 1]``
with one flattened image per row.  Loaders distrust their files: IDX headers
are checked before any payload is read (and decompression stops at the size
they promise), zip member names must follow the Omniglot layout, and PNGs of
any bit depth or with transparency are converted by luminance and alpha.
"""

import dataclasses
import functools
import gzip
import hashlib
import http.client
import io
import math
import os
import pathlib
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from .atomic import atomic_write

__all__ = ["Dataset", "OmniglotData", "load_digits", "load_mnist", "read_idx", "load_omniglot",
           "load_dataset", "split", "one_hot", "batch_indices", "default_data_dir", "download",
           "download_mnist", "download_omniglot", "downloaded", "DownloadError"]


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

#: default bound on the payload an IDX header may promise (the MNIST training images need 47 MB)
IDX_MAX_BYTES = 1 << 30


def _read_up_to(f, n):
    """Up to ``n`` bytes from ``f`` (fewer only at end of stream), read in bounded chunks."""
    out = bytearray(n)
    view, got = memoryview(out), 0
    while got < n:
        k = f.readinto(view[got:got + (1 << 20)])
        if not k:
            break
        got += k
    del view
    return out if got == n else out[:got]


def read_idx(path, expect_magic=None, expect_shape=None, max_bytes=IDX_MAX_BYTES):
    """Read one IDX file (raw or ``.gz``) into an array, validating header and size.

    ``expect_magic`` (e.g. 2051 for images, 2049 for labels), if given, must
    match the file's magic number; ``expect_shape`` (``None`` entries match
    any size), if given, must match the header's dimensions.  The header is
    checked before any payload is read: its promised size (computed with
    Python integers, so huge dimensions cannot wrap) must fit ``max_bytes``
    and, for a raw file, equal the file's size.  A ``.gz`` file is
    decompressed in a stream and never beyond the promised size plus one
    byte, so a gzip bomb costs no more memory than the header admits.
    """
    path = pathlib.Path(path)
    gz = path.name.endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            head = _read_up_to(f, 4)
            if len(head) < 4:
                raise ValueError(f"{path}: only {len(head)} bytes, too short for an IDX header "
                                 "(truncated?)")
            magic = int.from_bytes(head, "big")
            if expect_magic is not None and magic != expect_magic:
                raise ValueError(f"{path}: magic number {magic}, expected {expect_magic} "
                                 "(wrong file, or not an IDX file)")
            if head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES or head[3] < 1:
                raise ValueError(f"{path}: magic number {magic} is not a valid IDX header")
            ndim = head[3]
            header = 4 + 4 * ndim
            raw_dims = _read_up_to(f, 4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise ValueError(f"{path}: header needs {header} bytes but the file ends after "
                                 f"{4 + len(raw_dims)} (truncated)")
            dims = tuple(int.from_bytes(raw_dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
            dtype = np.dtype(_IDX_DTYPES[head[2]])
            if expect_shape is not None and (len(dims) != len(expect_shape) or any(
                    e is not None and d != e for d, e in zip(dims, expect_shape))):
                want = ", ".join("N" if e is None else str(e) for e in expect_shape)
                raise ValueError(f"{path}: dimensions {dims}, expected ({want})")
            payload = math.prod(dims) * dtype.itemsize           # Python ints: no wrap-around
            expected = header + payload
            if payload > max_bytes:
                raise ValueError(f"{path}: header promises dimensions {dims} = {payload:,} bytes, "
                                 f"more than max_bytes={max_bytes:,} (corrupt header?)")
            if not gz and os.fstat(f.fileno()).st_size != expected:
                size = os.fstat(f.fileno()).st_size
                raise ValueError(f"{path}: dimensions {dims} need {expected} bytes but the file "
                                 f"has {size} ({'truncated' if size < expected else 'trailing data'})")
            data = _read_up_to(f, payload)
            if len(data) < payload:
                raise ValueError(f"{path}: dimensions {dims} need {expected} bytes but the data "
                                 f"end after {header + len(data)} (truncated)")
            if f.read(1):
                raise ValueError(f"{path}: dimensions {dims} need {expected} bytes but more data "
                                 "follow (trailing data; corrupt file or a gzip bomb)")
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"cannot read {path}: {e} (corrupt or truncated file? "
                         "download it again)") from e
    return np.frombuffer(data, dtype=dtype).reshape(dims)


def _find_idx(directory, stem):
    for name in (stem, stem + ".gz"):
        p = directory / name
        if p.is_file():
            return p
    return None


def load_mnist(directory=None, n=None):
    """MNIST from the IDX files in ``directory`` (``.gz`` or raw; default: the
    folder :func:`download_mnist` fills).

    Reads ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` when
    present, then ``t10k-images-idx3-ubyte`` / ``t10k-labels-idx1-ubyte``, and
    concatenates them in that order; ``n`` keeps the first ``n`` images.
    Pixels are scaled to [0, 1]; ``image_shape`` is (28, 28).
    """
    if directory is None:
        directory = downloaded("mnist")
        if directory is None:
            raise ValueError(f"no MNIST folder given and none downloaded to "
                             f"{default_data_dir() / 'mnist'}: run `reversible download mnist` "
                             "(or reversible.data.download_mnist()), or pass the folder holding "
                             "the IDX files (e.g. t10k-images-idx3-ubyte.gz) as mnist_dir=...")
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
        images = read_idx(img_p, expect_magic=2051, expect_shape=(None, 28, 28))
        labels = read_idx(lab_p, expect_magic=2049, expect_shape=(None,))
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
        zip_paths = downloaded("omniglot")
        if zip_paths is None:
            raise ValueError(f"no Omniglot archives given and none downloaded to "
                             f"{default_data_dir() / 'omniglot'}: run `reversible download "
                             "omniglot` (or reversible.data.download_omniglot()), or pass the zip "
                             "archive(s) (e.g. images_background_small1.zip) or their folder "
                             "as omniglot_zip=...")
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
    """Ink in [0, 1] (1 = stroke) of one PNG, ``size x size`` by area averaging.

    Bilevel, grey, palette, RGB and 16-bit grey images are converted by
    luminance at their own bit depth; transparent pixels count as background
    (white), so an RGBA drawing on a transparent sheet reads as its strokes.
    """
    from PIL import Image
    try:
        with Image.open(io.BytesIO(png_bytes)) as im:
            if im.format != "PNG":
                raise ValueError(f"a {im.format} image, not a PNG")
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):          # 16-bit grey
                grey = np.asarray(im, dtype=np.float64)
                if grey.size and (grey.min() < 0 or grey.max() > 65535):
                    raise ValueError(f"mode {im.mode} values outside 0..65535")
                lum, alpha = grey / 65535.0, 1.0
            elif im.mode in ("1", "L", "P", "LA", "PA", "RGB", "RGBA", "La"):
                la = np.asarray(im.convert("RGBA").convert("LA"), dtype=np.float64) / 255.0
                lum, alpha = la[..., 0], la[..., 1]
            else:
                raise ValueError(f"unsupported PNG mode {im.mode!r} (expected bilevel, grey, "
                                 "palette, RGB(A) or 16-bit grey)")
    except Exception as e:  # PIL raises several types for bad images
        raise ValueError(f"{where}: cannot decode PNG ({e})") from e
    ink = ((1.0 - lum) * alpha).astype(np.float32)                  # strokes are dark on white
    if ink.shape != (size, size):
        # area average in float (mode "F"), so no rounding to 8 bits
        ink = np.asarray(Image.fromarray(ink).resize((size, size), Image.Resampling.BOX))
    return np.clip(ink.astype(np.float64).reshape(-1), 0.0, 1.0)


def _omniglot_members(zf, zp):
    """``{(alphabet, character, file): member}`` of one archive, checking every member name.

    Each file must be ``<top>/<alphabet>/<character>/<name>.png`` under one
    top folder; a name that is absolute, uses ``..``, ``.``, backslashes or
    empty parts, another layout, or appears twice makes the archive refused
    (it could otherwise add an alphabet or replace another archive's image).
    """
    out, tops = {}, set()
    for info in zf.infolist():
        name = info.filename
        parts = name.rstrip("/").split("/")
        unsafe = (name.startswith("/") or "\\" in name or ":" in parts[0]
                  or any(p in ("", ".", "..") for p in parts))
        if unsafe:
            raise ValueError(f"{zp}: refusing member {name!r}: its name escapes the archive's "
                             "folder (absolute path, '..', '.', backslash or empty part)")
        tops.add(parts[0])
        if info.is_dir():
            if len(parts) > 3:
                raise ValueError(f"{zp}: unexpected folder {name!r}: Omniglot archives hold "
                                 "<top>/<alphabet>/<character>/<file>.png")
            continue
        if len(parts) != 4 or not parts[-1].lower().endswith(".png"):
            raise ValueError(f"{zp}: unexpected member {name!r}: Omniglot archives hold only "
                             "<top>/<alphabet>/<character>/<file>.png")
        key = tuple(parts[1:])
        if key in out:
            raise ValueError(f"{zp}: member {name!r} appears twice (one copy would replace the "
                             "other)")
        out[key] = name
    if len(tops) > 1:
        raise ValueError(f"{zp}: members lie under several top folders {sorted(tops)}; an Omniglot "
                         "archive has one (e.g. images_background_small1/)")
    return out


def load_omniglot(zip_paths=None, size=28, alphabets=None):
    """Omniglot drawings read in memory from zip archives (nothing is extracted).

    ``zip_paths``: one archive, a list of them, or a folder of ``*.zip``
    (default: the folder :func:`download_omniglot` fills); each
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
            for key, member in _omniglot_members(zf, zp).items():
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


# ----------------------------------------------------------------------------- downloads

#: environment variable naming the user data directory (default ``~/.reversible/data``)
DATA_DIR_ENV = "REVERSIBLE_DATA_DIR"


@dataclass(frozen=True)
class RemoteFile:
    """One published file: its name, size in bytes and SHA-256."""

    name: str
    size: int
    sha256: str


#: the four MNIST IDX archives as published (LeCun, Cortes & Burges), with their SHA-256
MNIST_FILES = (
    RemoteFile("train-images-idx3-ubyte.gz", 9_912_422,
               "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    RemoteFile("train-labels-idx1-ubyte.gz", 28_881,
               "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    RemoteFile("t10k-images-idx3-ubyte.gz", 1_648_877,
               "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    RemoteFile("t10k-labels-idx1-ubyte.gz", 4_542,
               "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
)
#: mirrors tried in order (the original yann.lecun.com site often refuses downloads)
MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/")

#: the two small Omniglot background sets (Lake, Salakhutdinov & Tenenbaum; MIT licence)
OMNIGLOT_FILES = (
    RemoteFile("images_background_small1.zip", 1_319_022,
               "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4"),
    RemoteFile("images_background_small2.zip", 1_580_917,
               "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f"),
)
OMNIGLOT_URLS = ("https://raw.githubusercontent.com/brendenlake/omniglot/master/python/",)

#: data set name -> (published files, mirror base URLs tried in order)
DATASETS = {"mnist": (MNIST_FILES, MNIST_URLS), "omniglot": (OMNIGLOT_FILES, OMNIGLOT_URLS)}


class DownloadError(OSError):
    """A data file could not be fetched, or what was fetched is not the published file."""


def default_data_dir():
    """The user data directory: ``$REVERSIBLE_DATA_DIR`` if set, else ``~/.reversible/data``."""
    env = os.environ.get(DATA_DIR_ENV)
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".reversible" / "data"


def _dataset_dir(name, directory):
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    return pathlib.Path(directory) if directory is not None else default_data_dir() / name


def downloaded(name, directory=None):
    """The folder holding the downloaded files of ``name`` (``"mnist"`` or ``"omniglot"``), or None.

    Looks in ``directory`` (default ``default_data_dir() / name``) for every
    published file at its published size (the full SHA-256 check happens on
    download); used for the experiments' default ``--mnist-dir`` / ``--omniglot-zip``.
    """
    folder = _dataset_dir(name, directory)
    files = DATASETS[name][0]
    ok = all((folder / f.name).is_file() and (folder / f.name).stat().st_size == f.size
             for f in files)
    return folder if ok else None


def _sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url, remote, target, progress):
    """Stream ``url`` into ``target`` atomically, refusing anything but the published bytes."""
    import urllib.request   # late: only downloads need it

    def write(fh):
        h, got = hashlib.sha256(), 0
        bar = None
        with urllib.request.urlopen(url, timeout=60) as response:
            if progress:
                from tqdm.auto import tqdm
                bar = tqdm(total=remote.size, unit="B", unit_scale=True, desc=remote.name,
                           leave=False)
            try:
                while True:
                    block = response.read(1 << 16)
                    if not block:
                        break
                    got += len(block)
                    if got > remote.size:
                        raise DownloadError(f"{url} sends more than the {remote.size:,} bytes of "
                                            f"the published {remote.name}; refusing it")
                    h.update(block)
                    fh.write(block)
                    if bar is not None:
                        bar.update(len(block))
            finally:
                if bar is not None:
                    bar.close()
        if got != remote.size or h.hexdigest() != remote.sha256:
            raise DownloadError(f"{url} gave {got:,} bytes with SHA-256 {h.hexdigest()}, not the "
                                f"published {remote.name} ({remote.size:,} bytes, SHA-256 "
                                f"{remote.sha256}); nothing was saved")

    atomic_write(target, write)


def download(name, directory=None, *, base_url=None, progress=True):
    """Download the published files of ``name`` (``"mnist"`` or ``"omniglot"``) and verify them.

    Files go to ``directory`` (default ``default_data_dir() / name``, created
    if needed); returns that folder, ready for :func:`load_mnist` /
    :func:`load_omniglot`.  A file already there with the published SHA-256 is
    kept (no download); one that differs is replaced.  Each download is
    checked against the published size and SHA-256 before it is renamed into
    place, so a failed or altered download never leaves a file behind.
    ``base_url`` (e.g. ``"file:///mnt/mirror/"`` or an HTTP mirror) replaces
    the built-in mirrors.  Raises :class:`DownloadError` when no mirror gives
    the file, saying how to place it by hand.
    """
    folder = _dataset_dir(name, directory)
    files, mirrors = DATASETS[name]
    if base_url is not None:
        mirrors = (base_url if base_url.endswith("/") else base_url + "/",)
    folder.mkdir(parents=True, exist_ok=True)
    for remote in files:
        target = folder / remote.name
        if target.is_file() and target.stat().st_size == remote.size \
                and _sha256_of(target) == remote.sha256:
            continue
        failures = []
        for mirror in mirrors:
            url = mirror + remote.name
            try:
                _fetch(url, remote, target, progress)
                break
            except DownloadError as err:
                failures.append(str(err))
            except (OSError, ValueError, http.client.HTTPException) as err:   # offline, 404, ...
                failures.append(f"{url}: {getattr(err, 'reason', err)}")
        else:
            urls = " or ".join(m + remote.name for m in mirrors)
            raise DownloadError(
                f"could not download {remote.name} ({'; '.join(failures)}). If this machine is "
                f"offline, fetch {urls} elsewhere, check that its SHA-256 is {remote.sha256}, and "
                f"put it in {folder}; then run `reversible download {name} --dir {folder}` "
                "(or this function again) to verify it without downloading.")
    return folder


def download_mnist(directory=None, *, base_url=None, progress=True):
    """Download and verify the four MNIST files; returns their folder (see :func:`download`)."""
    return download("mnist", directory, base_url=base_url, progress=progress)


def download_omniglot(directory=None, *, base_url=None, progress=True):
    """Download and verify the two small Omniglot background zips; returns their folder
    (see :func:`download`)."""
    return download("omniglot", directory, base_url=base_url, progress=progress)


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
