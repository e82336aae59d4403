"""Data for VAEs: TensorFlow Datasets names, local files and an offline default, as `tf.data`.

    from keras_vae import datasets
    train = datasets.load("digits", "train", batch_size=100, shuffle=True, binarize="dynamic")
    x_test, y_test = datasets.load_numpy("digits", "test")

Sources (`name_or_path`):
- `"digits"`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, values 0..16 scaled
  to [0, 1]); needs no network. Split deterministically into 1,437 / 180 / 180 examples.
- TFDS names loaded with `tfds.load` (downloaded once into `data_dir`): `mnist`,
  `fashion_mnist`, `binarized_mnist`, `emnist` (= `emnist/balanced`) and `emnist/<config>`.
- A `.npz` file: arrays named by split (`train`, `valid` or `validation`, `test`), labels in
  `<split>_labels`; or Keras's layout `x_train, y_train, x_test, y_test`; or a single array.
- Tables: CSV/TSV and Parquet files (`datasets.tabular`; every column but a label column
  named "label", "y", "class", "target" or "outlier" is a feature), split 80/10/10 like a
  single array. A folder of images (`datasets.images`, Keras's image_dataset_from_directory;
  class subfolders give labels) the same way.
- MNIST IDX files (`*-ubyte`, `*.idx`, optionally `.gz`): a directory holding the usual
  `train-images-idx3-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]` (and label files), or one
  images file (labels are picked up from the matching `-labels-idx1-` file beside it).

Splits are always `train`, `valid` and `test`. A source without a validation split keeps the
last `min(10000, n_train // 6)` training examples for it (the usual 50k/10k for MNIST); a source
with a single array is split 80/10/10 after a fixed permutation.

Preprocessing: `scale` to [0, 1], `binarize` ("static": one fixed Bernoulli draw per pixel,
"dynamic": a fresh draw every epoch, "threshold": 1 where x > 0.5), `flatten` (or keep (H, W, C) images), `shuffle`, `batch`,
`cache` and `prefetch`.
"""

import gzip
import math
import os
import zipfile
import zlib

import numpy as np

from keras_vae.datasets import images, tabular

SPLITS = ("train", "valid", "test")
#: binarize options of `load`: none, one fixed draw, a fresh draw per epoch, x > 0.5.
BINARIZE = (None, "static", "dynamic", "threshold")
SPLIT_ALIASES = {"train": "train", "valid": "valid", "validation": "valid", "val": "valid",
                 "test": "test"}

#: Validation examples held out of `train` when a source has none: min(this, n_train // 6).
VALIDATION_HOLDOUT = 10000

#: Fractions for sources with a single array (digits, a lone IDX file or npz array).
SINGLE_ARRAY_FRACTIONS = (0.8, 0.1, 0.1)
SPLIT_PERMUTATION_SEED = 0

_EMNIST_CONFIGS = ("balanced", "byclass", "bymerge", "digits", "letters", "mnist")

# TFDS sources: tfds name, split slices, pixel scale (max raw value), labels, transposed storage.
_TFDS_SOURCES = {
    "mnist": dict(tfds_name="mnist", scale=255.0, labels=True),
    "fashion_mnist": dict(tfds_name="fashion_mnist", scale=255.0, labels=True),
    "binarized_mnist": dict(tfds_name="binarized_mnist", scale=1.0, labels=False),
    "emnist": dict(tfds_name="emnist/balanced", scale=255.0, labels=True, transpose=True),
}
_TFDS_SOURCES.update({
    f"emnist/{c}": dict(tfds_name=f"emnist/{c}", scale=255.0, labels=True, transpose=True)
    for c in _EMNIST_CONFIGS})

KNOWN_NAMES = ("digits",) + tuple(_TFDS_SOURCES)

_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_SUFFIXES = ("-ubyte", "-ubyte.gz", ".idx", ".idx.gz")


class DatasetNotAvailable(FileNotFoundError):
    """A TFDS dataset is neither in `data_dir` nor downloadable (for example offline)."""


def known_names():
    """The dataset names `load` accepts besides file paths (tuple of str)."""
    return KNOWN_NAMES


# --------------------------------------------------------------------------- resolving sources
def _canonical_split(split):
    if split not in SPLIT_ALIASES:
        raise ValueError(f"Unknown split {split!r}: expected one of {SPLITS} "
                         "('validation' and 'val' also mean 'valid').")
    return SPLIT_ALIASES[split]


def _looks_like_path(name):
    return (os.sep in name or name.startswith(".") or name.endswith((".npz",) + _IDX_SUFFIXES)
            or name.lower().endswith(tabular.TABLE_SUFFIXES) or os.path.exists(name))


def describe_source(name_or_path):
    """Which loader serves `name_or_path`: ("digits" | "tfds" | "npz" | "idx" | "table" |
    "images", key).

    Raises:
        ValueError: unknown name (the message lists the known ones).
        FileNotFoundError: a path that does not exist.
    """
    name = os.fspath(name_or_path)
    if name == "digits":
        return "digits", name
    if name in _TFDS_SOURCES:
        return "tfds", name
    if not _looks_like_path(name):
        raise ValueError(
            f"Unknown dataset {name!r}. Known names: {', '.join(KNOWN_NAMES)}; or give a path to "
            "a .npz file, an MNIST IDX file (*-ubyte[.gz]) or a directory of IDX files.")
    path = os.path.abspath(os.path.expanduser(name))
    if not os.path.exists(path):
        raise FileNotFoundError(f"Dataset file not found: {path}")
    if os.path.isdir(path):
        if images.is_image_folder(path) and _find_idx(path, "train", "images-idx3-ubyte") is None:
            return "images", path
        return "idx", path
    if path.lower().endswith(tabular.TABLE_SUFFIXES):
        return "table", path
    if path.endswith(".npz"):
        return "npz", path
    if path.endswith(_IDX_SUFFIXES):
        return "idx", path
    raise ValueError(f"Cannot tell the format of {path}: expected a .npz file, an MNIST IDX file "
                     "(name ending in -ubyte, .idx, optionally .gz) or a directory of IDX files.")


# --------------------------------------------------------------------------- in-memory sources
class _Arrays:
    """A source held in memory: {split: (x, labels or None)} with a common pixel scale."""

    def __init__(self, splits, scale, label="data"):
        self.splits = splits
        self.scale = scale
        self.label = label


def _carve_single(x, y, label):
    """Splits one array 80/10/10 after a fixed permutation (the same on every machine)."""
    n = len(x)
    _check_arrays({"all": (x, y)}, label)
    if n < 10:
        raise ValueError(f"{label} has only {n} examples; at least 10 are needed to make "
                         "train/valid/test splits.")
    order = np.random.default_rng(SPLIT_PERMUTATION_SEED).permutation(n)
    n_valid = int(round(SINGLE_ARRAY_FRACTIONS[1] * n))
    n_test = int(round(SINGLE_ARRAY_FRACTIONS[2] * n))
    n_train = n - n_valid - n_test
    parts = (order[:n_train], order[n_train:n_train + n_valid], order[n_train + n_valid:])
    return {s: (x[idx], None if y is None else y[idx]) for s, idx in zip(SPLITS, parts)}


def validation_holdout(n_train):
    """How many of `n_train` training examples become the validation split."""
    return min(VALIDATION_HOLDOUT, n_train // 6)


def _hold_out_valid(x, y):
    k = validation_holdout(len(x))
    if k < 1:
        raise ValueError(f"The training split has only {len(x)} examples, too few to hold out "
                         "a validation split; provide a 'valid' array.")
    return ((x[:-k], None if y is None else y[:-k]), (x[-k:], None if y is None else y[-k:]))


def _check_arrays(splits, label):
    """Shapes, dtypes, label lengths and per-example shape agreement across splits."""
    shape = None
    for split, (x, y) in splits.items():
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise ValueError(f"{label}: split {split!r} has dtype {x.dtype}; expected numbers "
                             "(uint8 pixels or floats).")
        if x.ndim not in (2, 3, 4):
            raise ValueError(f"{label}: split {split!r} has shape {x.shape}; expected (n, D) "
                             "vectors, (n, H, W) or (n, H, W, C) images.")
        if len(x) == 0:
            raise ValueError(f"{label}: split {split!r} is empty.")
        if shape is None:
            shape = x.shape[1:]
        elif x.shape[1:] != shape:
            raise ValueError(f"{label}: split {split!r} has examples shaped {x.shape[1:]} but "
                             f"other splits have {shape}; all splits must agree.")
        if y is not None:
            if y.ndim != 1 or len(y) != len(x):
                raise ValueError(f"{label}: the labels of split {split!r} have shape {y.shape}; "
                                 f"expected ({len(x)},), one label per example.")
            if not np.issubdtype(y.dtype, np.integer):
                raise ValueError(f"{label}: the labels of split {split!r} have dtype {y.dtype}; "
                                 "expected integers.")


def _auto_scale(splits, label):
    """The divisor that maps the raw values into [0, 1]: 1 (already), or 255 for bytes."""
    lo = min(float(np.min(x)) for x, _ in splits.values())
    hi = max(float(np.max(x)) for x, _ in splits.values())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{label} contains NaN or infinite values; clean them first.")
    if lo >= 0 and hi <= 1:
        return 1.0
    integer = all(np.issubdtype(x.dtype, np.integer) for x, _ in splits.values())
    if integer and lo >= 0 and hi <= 255:
        return 255.0
    raise ValueError(f"{label} has values in [{lo:g}, {hi:g}]; scale='auto' only knows [0, 1] "
                     "data and 0..255 bytes. Pass scale=<the maximum value> (--scale MAX) to divide "
                     "by it, or scale=None (--scale none) to keep the values (for a Gaussian "
                     "likelihood).")


def digits_split_indices():
    """The one definition of the `digits` splits: indices into scikit-learn's 1,797 digits by
    position i, test if i % 10 == 0 (180), valid if i % 10 == 5 (180), train the rest (1,437),
    order kept. (The zoo's digits models were measured on this test split.)"""
    index = np.arange(1797)
    position = index % 10
    return {"train": index[(position != 0) & (position != 5)], "valid": index[position == 5],
            "test": index[position == 0]}


def _load_digits(_name="digits"):
    from sklearn.datasets import load_digits
    bunch = load_digits()
    x = bunch.images.astype("float32")[..., None]  # (1797, 8, 8, 1), values 0..16
    y = bunch.target.astype("int64")
    splits = {split: (x[idx], y[idx]) for split, idx in digits_split_indices().items()}
    return _Arrays(splits, 16.0, "digits")


def read_npz(path):
    """Every array of a .npz file as {name: array} (the one .npz reader of the package).

    Raises:
        ValueError: naming the file when it is not a complete .npz archive (or holds pickles).
    """
    return _read_npz(path)


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise ValueError(f"Cannot read {path} as a .npz archive ({type(err).__name__}: {err}). "
                         "Is the file complete and written with numpy.savez?") from None


def _load_npz(path):
    arrays = _read_npz(path)
    label = os.path.basename(path)

    def pick(*names):
        for n in names:
            if n in arrays:
                return arrays[n]
        return None

    splits = {}
    if "x_train" in arrays:  # keras.datasets layout
        train, test = (arrays["x_train"], pick("y_train")), (pick("x_test"), pick("y_test"))
        if test[0] is None:
            raise ValueError(f"{path} has x_train but no x_test array; it holds "
                             f"{sorted(arrays)}.")
        valid = (pick("x_valid", "x_val", "x_validation"),
                 pick("y_valid", "y_val", "y_validation"))
        splits = {"train": train, "valid": valid, "test": test}
    elif "train" in arrays:
        for split, names in (("train", ("train",)), ("valid", ("valid", "validation", "val")),
                             ("test", ("test",))):
            x = pick(*names)
            y = pick(*(f"{n}_labels" for n in names))
            splits[split] = (x, y)
        if splits["test"][0] is None:
            raise ValueError(f"{path} has a 'train' array but no 'test' array; it holds "
                             f"{sorted(arrays)}.")
    else:
        data = [k for k in arrays if not k.endswith("labels") and k not in ("y", "labels")]
        if len(data) != 1:
            raise ValueError(
                f"{path} holds arrays {sorted(arrays)}; expected arrays named by split ('train', "
                "'valid', 'test' with optional '<split>_labels'), Keras's 'x_train', 'y_train', "
                "'x_test', 'y_test', or a single data array (with optional 'labels').")
        splits = _carve_single(arrays[data[0]], pick("labels", "y"), label)
    _check_arrays({s: pair for s, pair in splits.items() if pair[0] is not None}, label)
    if splits["valid"][0] is None:
        splits["train"], splits["valid"] = _hold_out_valid(*splits["train"])
    return _Arrays(splits, None, label)


def read_idx(path):
    """Reads one IDX file (the MNIST format), gzipped or not, into a NumPy array.

    The header is read first and only the bytes it declares are read after it, in blocks, so
    memory stays bounded by the declared size even for a file (or a gzip stream) that holds
    far more: one byte past the declared data is enough to reject trailing data.

    Returns:
        Array with the file's dimensions, e.g. (n, 28, 28) uint8 for images, (n,) for labels.

    Raises:
        ValueError: naming the path if the header is invalid, the data is truncated or more
            data follows than the header declares.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            magic = handle.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
                raise ValueError(f"{path} is not an IDX file: its header {magic.hex()} is not "
                                 "00 00 <type> <ndim>.")
            dtype, ndim = _IDX_DTYPES[magic[2]], magic[3]
            sizes = handle.read(4 * ndim)
            if ndim < 1 or len(sizes) < 4 * ndim:
                raise ValueError(f"{path} is not a valid IDX file: truncated header.")
            dims = tuple(int.from_bytes(sizes[4 * i:4 * i + 4], "big") for i in range(ndim))
            expected = math.prod(dims) * dtype.itemsize
            if not path.endswith(".gz"):  # a plain file's size is known before reading it
                available = os.fstat(handle.fileno()).st_size - 4 - 4 * ndim
                if available != expected:
                    raise ValueError(
                        f"{path} is truncated or corrupt: its header announces shape {dims} "
                        f"({expected} bytes) but {available} bytes follow.")
            blocks, got = [], 0
            while got < expected:  # memory grows with the data actually present
                block = handle.read(min(1 << 22, expected - got))
                if not block:
                    break
                blocks.append(block)
                got += len(block)
            if got < expected:
                raise ValueError(f"{path} is truncated or corrupt: its header announces shape "
                                 f"{dims} ({expected} bytes) but only {got} bytes follow.")
            if handle.read(1):
                raise ValueError(f"{path} is corrupt: more data follows the {expected} bytes "
                                 f"its header announces (shape {dims}).")
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"Cannot read {path}: {err}") from None
    array = np.frombuffer(b"".join(blocks), dtype=dtype).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # native byte order


def _find_idx(directory, prefix, kind):
    for name in (f"{prefix}-{kind}", f"{prefix}-{kind}.gz", f"{prefix}-{kind}.idx",
                 f"{prefix}-{kind}.idx.gz"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    return None


def _labels_beside(images_path):
    base = os.path.basename(images_path)
    if "images" not in base:
        return None
    candidate = os.path.join(os.path.dirname(images_path),
                             base.replace("images", "labels").replace("idx3", "idx1"))
    if os.path.exists(candidate):
        return candidate
    for alt in (candidate[:-3] if candidate.endswith(".gz") else candidate + ".gz",):
        if os.path.exists(alt):
            return alt
    return None


def _load_idx(path):
    if os.path.isdir(path):
        found = {prefix: (_find_idx(path, prefix, "images-idx3-ubyte"),
                          _find_idx(path, prefix, "labels-idx1-ubyte"))
                 for prefix in ("train", "t10k")}
        if found["train"][0] is None or found["t10k"][0] is None:
            raise FileNotFoundError(
                f"{path} does not hold MNIST IDX files: expected train-images-idx3-ubyte[.gz] "
                f"and t10k-images-idx3-ubyte[.gz]; found {sorted(os.listdir(path))}.")
        def read_pair(prefix):
            images_path, labels_path = found[prefix]
            labels = None if labels_path is None else read_idx(labels_path).astype("int64")
            return read_idx(images_path), labels

        train, test = read_pair("train"), read_pair("t10k")
        _check_arrays({"train": train, "test": test}, os.path.basename(path))
        splits = {"test": test}
        splits["train"], splits["valid"] = _hold_out_valid(*train)
    else:
        labels_path = _labels_beside(path)
        x = read_idx(path)
        y = None if labels_path is None else read_idx(labels_path).astype("int64")
        splits = _carve_single(x, y, os.path.basename(path))
    return _Arrays(splits, None, os.path.basename(path))


#: Column names taken as the label of a table read by `load` (the label is never a feature).
TABLE_LABEL_NAMES = ("label", "y", "class", "target", "outlier", "anomaly")


def _load_table(path):
    label = os.path.basename(path)
    label_column = next((c for c in tabular.column_names(path)
                         if c.lower() in TABLE_LABEL_NAMES), None)
    table = tabular.read_table(path, label_column=label_column, allow_constant=True)
    return _Arrays(_carve_single(table.x.astype("float32"), table.y, label), None, label)


def _load_images(path):
    x, labels, _ = images.load_image_folder(path)
    label = os.path.basename(os.path.normpath(path))
    return _Arrays(_carve_single(x, labels, label), 1.0, label)


# --------------------------------------------------------------------------- tf.data pipeline
def _tfds_dataset(name, split, data_dir, download):
    import tensorflow as tf
    import tensorflow_datasets as tfds
    source = _TFDS_SOURCES[name]
    slices = {"train": "train", "valid": "validation", "test": "test"}
    if source["tfds_name"] != "binarized_mnist":  # no validation split: hold one out of train
        slices = {"train": f"train[:-{VALIDATION_HOLDOUT}]",
                  "valid": f"train[-{VALIDATION_HOLDOUT}:]", "test": "test"}
    try:
        ds = tfds.load(source["tfds_name"], split=slices[split], data_dir=data_dir,
                       download=download)
    except Exception as err:  # tfds raises many types when offline or missing; name the fix
        where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
        raise DatasetNotAvailable(
            f"Could not load the TFDS dataset {source['tfds_name']!r} (split {slices[split]!r}) "
            f"from {where}: {type(err).__name__}: {err}. It is downloaded on first use, which "
            "needs the internet; offline, use the 'digits' dataset or a local .npz/IDX "
            "file.") from err

    def to_tuple(example):
        image = example["image"]
        if source.get("transpose"):  # EMNIST is stored transposed
            image = tf.transpose(image, (1, 0, 2))
        label = example["label"] if source["labels"] else tf.constant(-1, tf.int64)
        return image, tf.cast(label, tf.int64)

    return ds.map(to_tuple, num_parallel_calls=tf.data.AUTOTUNE), source["scale"], \
        source["labels"]


def _image_shape(example_shape, flatten):
    """Per-example shape after preprocessing; images as (H, W, C)."""
    shape = tuple(int(d) for d in example_shape)
    if len(shape) == 2:
        shape = shape + (1,)
    if flatten:
        return (math.prod(shape),)
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        if side * side != shape[0]:
            raise ValueError(f"The data are flat vectors of {shape[0]} values, not square images; "
                             "they cannot keep an image shape (use flatten=True / an MLP model).")
        return (side, side, 1)
    return shape


def _resolve_scale(scale, source_scale, arrays, label):
    if scale is None:
        return None
    if scale == "auto":
        if source_scale is not None:
            return float(source_scale)
        return _auto_scale(arrays.splits, label)
    scale = float(scale)
    if not scale > 0:
        raise ValueError(f"scale must be 'auto', None or a positive number, got {scale!r}.")
    return scale


def load(name_or_path="digits", split="train", *, batch_size=None, shuffle=False,
         binarize=None, flatten=True, scale="auto", cache=True, prefetch=True,
         with_labels=False, seed=0, limit=None, drop_remainder=False, data_dir=None,
         download=True):
    """A split of a dataset as a `tf.data.Dataset` ready for `VAE.fit`.

    Args:
        name_or_path: "digits", a TFDS name (see `known_names()`), or a path to a .npz file,
            an IDX file or a directory of MNIST IDX files.
        split: "train", "valid" (or "validation") or "test".
        batch_size: int, or None for unbatched elements.
        shuffle: reshuffle the examples every epoch (seeded by `seed`).
        binarize: None; "static" (each pixel is replaced once by a Bernoulli draw with its
            intensity as probability, the same draw every epoch, fixed by `seed`); "dynamic"
            (a fresh draw every time the dataset is iterated, i.e. every epoch); or
            "threshold" (1 where the scaled pixel is above 0.5, else 0; no randomness).
        flatten: True for vectors (D,), False to keep images (H, W, C).
        scale: "auto" (divide by the source's maximum pixel value: 16 for digits, 255 for bytes,
            1 for data already in [0, 1]), a number to divide by, or None to keep raw values.
        cache: keep the preprocessed examples in memory (prepared once; dynamic binarization
            happens afterwards, so draws stay fresh).
        prefetch: prefetch batches with `tf.data.AUTOTUNE`.
        with_labels: yield `(x, label)` (int64; the source must have labels) instead of `x`.
        seed: seed of the shuffling and binarization.
        limit: keep only the first `limit` examples of the split.
        drop_remainder: drop the last incomplete batch.
        data_dir: TFDS data directory (default `~/tensorflow_datasets` or $TFDS_DATA_DIR).
        download: let TFDS download the dataset if it is not in `data_dir`.

    Returns:
        `tf.data.Dataset` of float32 `x` shaped (batch, *example_shape) (or unbatched), or of
        `(x, label)` pairs, values in [0, 1] unless `scale=None`.

    Raises:
        ValueError: unknown names, unreadable files, bad options, wrong shapes or dtypes.
        FileNotFoundError: a missing path; `DatasetNotAvailable` for TFDS data that cannot be
            loaded (for example offline).
    """
    ds, _ = _pipeline(name_or_path, split, batch_size=batch_size, shuffle=shuffle,
                      binarize=binarize, flatten=flatten, scale=scale, cache=cache,
                      prefetch=prefetch, labels="yes" if with_labels else "no", seed=seed,
                      limit=limit, drop_remainder=drop_remainder, data_dir=data_dir,
                      download=download)
    return ds


def load_numpy(name_or_path="digits", split="train", *, binarize=None, flatten=True,
               scale="auto", seed=0, limit=None, data_dir=None, download=True):
    """A split as NumPy arrays, for small data and plots.

    Args: as `load`; `binarize="dynamic"` is refused (an array holds one draw: use "static",
    or `load` for fresh draws each epoch).

    Returns:
        `(x, labels)`: x float32 (n, *example_shape); labels int64 (n,), or None if the source
        has no labels.
    """
    if binarize == "dynamic":
        raise ValueError("binarize='dynamic' draws afresh each epoch, which a NumPy array cannot "
                         "do: use binarize='static', or datasets.load(...) for a tf.data "
                         "pipeline.")
    ds, has_labels = _pipeline(name_or_path, split, batch_size=4096, shuffle=False,
                               binarize=binarize, flatten=flatten, scale=scale, cache=False,
                               prefetch=False, labels="any", seed=seed, limit=limit,
                               drop_remainder=False, data_dir=data_dir, download=download)
    xs, ys = zip(*ds.as_numpy_iterator())
    return np.concatenate(xs), (np.concatenate(ys) if has_labels else None)


def example_shape(name_or_path, flatten=True, data_dir=None, scale="auto"):
    """The per-example shape `load(name_or_path, flatten=..., scale=...)` yields, e.g. (64,) or
    (8, 8, 1); `scale` as in `load` (with "auto", data outside [0, 1] and 0..255 is refused)."""
    ds = load(name_or_path, "test", flatten=flatten, cache=False, prefetch=False, limit=1,
              data_dir=data_dir, scale=scale)
    return tuple(int(d) for d in ds.element_spec.shape)


def _check_options(binarize, batch_size, limit, scale):
    if binarize not in BINARIZE:
        raise ValueError(f"binarize must be None, 'static' or 'dynamic' (random draws) or "
                         f"'threshold' (x > 0.5), got {binarize!r}.")
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
    if limit is not None and (isinstance(limit, bool) or int(limit) != limit or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}.")
    if binarize is not None and scale is None:
        raise ValueError("binarize needs probabilities in [0, 1]: use scale='auto' or a number.")


def _pipeline(name_or_path, split, *, batch_size, shuffle, binarize, flatten, scale, cache,
              prefetch, labels, seed, limit, drop_remainder, data_dir, download):
    """The one pipeline behind `load` and `load_numpy`; labels: "no", "yes" or "any" (pairs,
    with -1 where the source has none). Returns (dataset, whether the source has labels)."""
    import tensorflow as tf
    split = _canonical_split(split)
    _check_options(binarize, batch_size, limit, scale)
    seed = int(seed)
    kind, key = describe_source(name_or_path)
    if kind == "tfds":
        ds, source_scale, has_labels = _tfds_dataset(key, split, data_dir, download)
        example_shape_ = tuple(ds.element_spec[0].shape)
        scale_value = _resolve_scale(scale, source_scale, None, key)
        if limit is not None:
            ds = ds.take(int(limit))
    else:
        arrays = {"digits": _load_digits, "npz": _load_npz, "idx": _load_idx,
                  "table": _load_table, "images": _load_images}[kind](key)
        x, y = arrays.splits[split]
        has_labels = y is not None
        example_shape_ = x.shape[1:]
        scale_value = _resolve_scale(scale, arrays.scale, arrays, arrays.label)
        if limit is not None:
            x, y = x[:int(limit)], None if y is None else y[:int(limit)]
        ds = tf.data.Dataset.from_tensor_slices(
            (x, y if has_labels else np.full(len(x), -1, dtype="int64")))
    if labels == "yes" and not has_labels:
        raise ValueError(f"{name_or_path!r} has no labels; use with_labels=False.")
    shape = _image_shape(example_shape_, flatten)

    def prepare(index, pair):
        image, label = pair
        image = tf.reshape(tf.cast(image, tf.float32), shape)
        if scale_value is not None:
            image = image / scale_value
        if binarize == "static":  # the same draw every epoch: seeded by the example's index
            u = tf.random.stateless_uniform(shape, seed=tf.stack([tf.cast(seed, tf.int64), index]))
            image = tf.cast(u < image, tf.float32)
        elif binarize == "threshold":
            image = tf.cast(image > 0.5, tf.float32)
        return image, label

    ds = ds.enumerate().map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    if cache and kind == "tfds":
        ds = ds.cache()
    elif cache:
        # In memory already: prepare every example once, now, and slice the result. A
        # .cache() here would be discarded (with a warning) whenever an iterator stops early,
        # as Keras's does when it reads one batch to build a model under a strategy.
        ds = tf.data.Dataset.from_tensor_slices(ds.batch(len(x)).get_single_element())
    if shuffle:
        ds = ds.shuffle(50000, seed=seed, reshuffle_each_iteration=True)
    if binarize == "dynamic":  # fresh draws each iteration: per-element seeds rerandomized
        noise_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

        def draw(pair, noise_seed):
            image, label = pair
            u = tf.random.stateless_uniform(
                shape, seed=tf.stack([noise_seed, tf.cast(seed, tf.int64)]))
            return tf.cast(u < image, tf.float32), label

        ds = tf.data.Dataset.zip((ds, noise_seeds)).map(draw, num_parallel_calls=tf.data.AUTOTUNE)
    if labels == "no":
        ds = ds.map(lambda image, label: image)
    if batch_size is not None:
        ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds, has_labels
