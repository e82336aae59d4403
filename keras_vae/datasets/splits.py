"""All three splits of a dataset as arrays, checked: what `keras-vae zoo build` measures on."""

from pathlib import Path

import numpy as np

from keras_vae.datasets import load_numpy, read_npz

#: Datasets `load_splits` knows.
SPLIT_SOURCES = ("binarized_mnist", "digits")


def check_binarized_mnist(data):
    """The absolute path of a statically binarized MNIST .npz (uint8 0/1 arrays train/valid/
    test of shape (N, 784)), after checking it; raises a ValueError / FileNotFoundError that
    names the problem otherwise."""
    if data is None:
        raise ValueError("binarized_mnist needs --data PATH: an .npz with uint8 0/1 arrays "
                         "'train', 'valid', 'test' of shape (N, 784).")
    path = Path(data).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"No binarized MNIST file at {path}: expected an .npz with "
                                "arrays 'train', 'valid', 'test' of shape (N, 784).")
    arrays = read_npz(str(path))
    missing = [k for k in ("train", "valid", "test") if k not in arrays]
    if missing:
        raise ValueError(f"{path} lacks the arrays {missing} (it has {sorted(arrays)}); "
                         "expected train/valid/test.")
    for key in ("train", "valid", "test"):
        arr = arrays[key]
        if arr.ndim != 2 or arr.shape[1] != 784:
            raise ValueError(f"{path}: '{key}' has shape {arr.shape}, expected (N, 784).")
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{path}: '{key}' is not binary (values other than 0 and 1); "
                             "the zoo recipes use statically binarized MNIST.")
    return str(path.resolve())


def source_of(dataset, data=None):
    """(name_or_path, binarize) that `keras_vae.datasets.load` reads a zoo dataset with:
    digits binarized at 0.5 ("threshold"), binarized_mnist from its checked .npz file."""
    if dataset == "digits":
        if data not in (None, "digits"):
            raise ValueError(f"The digits recipes use scikit-learn's bundled digits; got "
                             f"--data {data!r}. Leave --data out (or pass 'digits').")
        return "digits", "threshold"
    if dataset == "binarized_mnist":
        return check_binarized_mnist(data), None
    raise ValueError(f"Unknown dataset {dataset!r}: expected one of {SPLIT_SOURCES}.")


def load_splits(dataset, data=None):
    """The train/valid/test splits of a zoo dataset, as flat float32 arrays in {0, 1}.

    Args:
        dataset: "binarized_mnist" or "digits".
        data: binarized_mnist: path of the .npz (arrays train/valid/test, uint8 0/1, (N, 784)).
            digits: None or "digits" (scikit-learn's bundled copy is used).

    Returns:
        (train, valid, test): binarized_mnist (50000, 784), (10000, 784), (10000, 784);
        digits (1437, 64), (180, 64), (180, 64): load_digits().data / 16 > 0.5, split as
        `keras_vae.datasets.digits_split_indices` (test: i % 10 == 0, valid: i % 10 == 5,
        train: the rest), order kept.
    """
    source, binarize = source_of(dataset, data)
    return tuple(load_numpy(source, split, binarize=binarize)[0]
                 for split in ("train", "valid", "test"))
