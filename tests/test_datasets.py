"""keras_vae.datasets against ground truth: the raw arrays each source was built from.

TFDS runs offline through `tfds.testing.mock_data`; the file routes read files these tests write
(the IDX writer below follows the format's specification independently of the reader).
"""

import gzip
import struct

import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

from keras_vae import datasets


# ----------------------------------------------------------------------------- helpers
def write_idx(path, array):
    """Writes `array` in the IDX format: 0, 0, type code, ndim, big-endian dims, big-endian data."""
    codes = {np.dtype("uint8"): 0x08, np.dtype("int8"): 0x09, np.dtype("int16"): 0x0B,
             np.dtype("int32"): 0x0C, np.dtype("float32"): 0x0D, np.dtype("float64"): 0x0E}
    header = struct.pack(">BBBB", 0, 0, codes[array.dtype], array.ndim)
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(payload)


@pytest.fixture(scope="module")
def digits_raw():
    bunch = load_digits()
    return bunch.data.astype("float32") / 16.0, bunch.target


# ----------------------------------------------------------------------------- digits
def test_digits_splits_partition_sklearn_data(digits_raw):
    raw_x, raw_y = digits_raw
    parts = {s: datasets.load_numpy("digits", s) for s in datasets.SPLITS}
    assert [len(parts[s][0]) for s in datasets.SPLITS] == [1437, 180, 180]
    x = np.concatenate([parts[s][0] for s in datasets.SPLITS])
    y = np.concatenate([parts[s][1] for s in datasets.SPLITS])
    # Same examples as sklearn's (scaled by 1/16), each exactly once, labels kept with them.
    order = np.lexsort(x.T[::-1])
    raw_order = np.lexsort(raw_x.T[::-1])
    np.testing.assert_array_equal(x[order], raw_x[raw_order])
    lookup = {row.tobytes(): label for row, label in zip(raw_x, raw_y)}
    assert all(lookup[row.tobytes()] == label for row, label in zip(x, y))
    assert x.min() == 0.0 and x.max() == 1.0


def test_digits_splits_are_deterministic():
    a, _ = datasets.load_numpy("digits", "valid")
    b, _ = datasets.load_numpy("digits", "validation")
    np.testing.assert_array_equal(a, b)


def test_flatten_false_keeps_the_image_shape_of_the_same_pixels(digits_raw):
    x, _ = datasets.load_numpy("digits", "test", flatten=False)
    flat, _ = datasets.load_numpy("digits", "test")
    assert x.shape == (180, 8, 8, 1)
    np.testing.assert_array_equal(x.reshape(180, 64), flat)
    assert datasets.example_shape("digits", flatten=False) == (8, 8, 1)
    assert datasets.example_shape("digits") == (64,)


def test_scale_divides_the_raw_values_and_none_keeps_them(digits_raw):
    raw, _ = datasets.load_numpy("digits", "test", scale=None)
    scaled, _ = datasets.load_numpy("digits", "test")
    halved, _ = datasets.load_numpy("digits", "test", scale=32)
    assert raw.max() == 16.0
    np.testing.assert_allclose(scaled, raw / 16.0)
    np.testing.assert_allclose(halved, raw / 32.0)


# ----------------------------------------------------------------------------- npz
def test_npz_by_split_name_with_labels(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {s: rng.integers(0, 256, (n, 6, 6), dtype=np.uint8)
              for s, n in (("train", 30), ("valid", 7), ("test", 5))}
    labels = {f"{s}_labels": rng.integers(0, 10, len(a)) for s, a in arrays.items()}
    path = tmp_path / "data.npz"
    np.savez(path, **arrays, **labels)
    for split in datasets.SPLITS:
        x, y = datasets.load_numpy(str(path), split)
        np.testing.assert_allclose(x, arrays[split].reshape(len(x), 36) / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(y, labels[f"{split}_labels"])


def test_npz_keras_layout_holds_out_validation(tmp_path):
    rng = np.random.default_rng(2)
    x_train = rng.integers(0, 256, (60, 4, 4), dtype=np.uint8)
    y_train = np.arange(60)
    path = tmp_path / "keras.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_train[:9], y_test=y_train[:9])
    x, y = datasets.load_numpy(str(path), "train", flatten=False)
    xv, yv = datasets.load_numpy(str(path), "valid", flatten=False)
    assert datasets.validation_holdout(60) == 10
    np.testing.assert_array_equal(y, np.arange(50))
    np.testing.assert_array_equal(yv, np.arange(50, 60))
    np.testing.assert_allclose(xv[..., 0], x_train[50:] / 255.0, rtol=1e-6)
    assert x.shape == (50, 4, 4, 1)


def test_npz_binary_data_is_not_rescaled_and_single_array_is_split(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 2, (100, 16), dtype=np.uint8)
    path = tmp_path / "one.npz"
    np.savez(path, x=data)
    parts = [datasets.load_numpy(str(path), s) for s in datasets.SPLITS]
    assert [len(p[0]) for p in parts] == [80, 10, 10]
    assert all(p[1] is None for p in parts)
    x = np.concatenate([p[0] for p in parts])
    np.testing.assert_array_equal(np.sort(x, axis=0),
                                  np.sort(data.astype("float32"), axis=0))
    # flat vectors of a square size can become square images
    assert datasets.load_numpy(str(path), "test", flatten=False)[0].shape == (10, 4, 4, 1)


# ----------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_directory_of_mnist_files(tmp_path, suffix):
    rng = np.random.default_rng(4)
    train = rng.integers(0, 256, (70, 5, 5), dtype=np.uint8)
    test = rng.integers(0, 256, (8, 5, 5), dtype=np.uint8)
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", train)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.arange(70, dtype=np.uint8))
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", test)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", np.arange(8, dtype=np.uint8))
    x, y = datasets.load_numpy(str(tmp_path), "train", flatten=False)
    xv, yv = datasets.load_numpy(str(tmp_path), "valid")
    xt, yt = datasets.load_numpy(str(tmp_path), "test")
    holdout = datasets.validation_holdout(70)
    np.testing.assert_allclose(x[..., 0], train[:70 - holdout] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(yv, np.arange(70 - holdout, 70))
    np.testing.assert_allclose(xt, test.reshape(8, 25) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(yt, np.arange(8))
    assert y.dtype == np.int64


def test_idx_single_file_picks_up_labels_beside_it(tmp_path):
    images = np.random.default_rng(5).integers(0, 256, (40, 3, 3), dtype=np.uint8)
    write_idx(tmp_path / "mine-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "mine-labels-idx1-ubyte.gz", (np.arange(40) % 10).astype(np.uint8))
    parts = [datasets.load_numpy(str(tmp_path / "mine-images-idx3-ubyte.gz"), s)
             for s in datasets.SPLITS]
    assert [len(p[0]) for p in parts] == [32, 4, 4]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    for row, label in zip(x, y):  # every example keeps its own label
        index = np.flatnonzero(np.abs(images.reshape(40, 9) / 255.0 - row).max(axis=1) < 1e-6)
        assert (index % 10 == label).all() and len(index) >= 1


def test_read_idx_float_roundtrip(tmp_path):
    values = np.linspace(-1, 1, 24, dtype="float32").reshape(2, 3, 4)
    write_idx(tmp_path / "f.idx", values)
    np.testing.assert_array_equal(datasets.read_idx(str(tmp_path / "f.idx")), values)


# ----------------------------------------------------------------------------- TFDS (mocked)
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "emnist/mnist"])
def test_tfds_route_scales_and_keeps_labels(name):
    with tfds.testing.mock_data(num_examples=12):
        raw = list(tfds.load(datasets._TFDS_SOURCES[name]["tfds_name"], split="test"))
        x, y = datasets.load_numpy(name, "test", flatten=False)
        train = next(iter(datasets.load(name, "train", batch_size=5)))
    images = np.stack([np.asarray(e["image"]) for e in raw]).astype("float32") / 255.0
    if name.startswith("emnist"):  # stored transposed; the loader turns them upright
        images = images.transpose(0, 2, 1, 3)
    np.testing.assert_allclose(x, images, rtol=1e-6)
    np.testing.assert_array_equal(y, [int(e["label"]) for e in raw])
    assert x.shape[1:] == (28, 28, 1) and tuple(train.shape) == (5, 784)


def test_tfds_binarized_mnist_has_no_labels():
    with tfds.testing.mock_data(num_examples=6, max_value=2):  # pixels 0/1 like the real data
        x, y = datasets.load_numpy("binarized_mnist", "valid")
        assert y is None and x.shape == (6, 784) and set(np.unique(x)) == {0.0, 1.0}
        with pytest.raises(ValueError, match="has no labels"):
            datasets.load("binarized_mnist", "train", with_labels=True)


# ----------------------------------------------------------------------------- preprocessing
def _epochs(ds, n):
    return [np.concatenate(list(ds.as_numpy_iterator())) for _ in range(n)]


def test_static_binarization_is_one_fixed_bernoulli_draw():
    probs, _ = datasets.load_numpy("digits", "train")
    ds = datasets.load("digits", "train", binarize="static", batch_size=500, seed=7)
    first, second = _epochs(ds, 2)
    assert set(np.unique(first)) == {0.0, 1.0}
    np.testing.assert_array_equal(first, second)  # the same draw every epoch
    again = datasets.load_numpy("digits", "train", binarize="static", seed=7)[0]
    other = datasets.load_numpy("digits", "train", binarize="static", seed=8)[0]
    np.testing.assert_array_equal(first, again)
    assert np.mean(first != other) > 0.05
    assert np.all(first[probs == 0] == 0) and np.all(first[probs == 1] == 1)
    # E[b] = p: the total count of ones matches the sum of probabilities within 5 sigma.
    sigma = np.sqrt(np.sum(probs * (1 - probs)))
    assert abs(first.sum() - probs.sum()) < 5 * sigma


@pytest.mark.parametrize("cache", [True, False])
def test_dynamic_binarization_draws_afresh_each_epoch(cache):
    probs, _ = datasets.load_numpy("digits", "train", limit=100)
    ds = datasets.load("digits", "train", binarize="dynamic", limit=100, batch_size=100,
                       cache=cache, seed=3)
    epochs = np.stack(_epochs(ds, 150))  # (150, 100, 64)
    assert set(np.unique(epochs)) == {0.0, 1.0}
    # Consecutive epochs agree on a pixel with probability p^2 + (1-p)^2 if draws are fresh.
    agree = np.mean(epochs[1:] == epochs[:-1])
    expected = np.mean(probs ** 2 + (1 - probs) ** 2)
    assert abs(agree - expected) < 0.01, (agree, expected)
    # Per-pixel frequencies match p: pixels with p in {0, 1} exactly, the others jointly by a
    # chi-square statistic (df = their count, 5 standard deviations of slack).
    frequency = epochs.mean(0)
    certain = (probs == 0) | (probs == 1)
    np.testing.assert_array_equal(frequency[certain], probs[certain])
    p = probs[~certain]
    chi2 = np.sum((frequency[~certain] - p) ** 2 / (p * (1 - p) / len(epochs)))
    assert abs(chi2 - p.size) < 5 * np.sqrt(2 * p.size), (chi2, p.size)
    # Reproducible: the same seed gives the same first epoch.
    again = datasets.load("digits", "train", binarize="dynamic", limit=100, batch_size=100,
                          cache=cache, seed=3)
    np.testing.assert_array_equal(_epochs(again, 1)[0], epochs[0])


def test_shuffle_reorders_each_epoch_and_keeps_examples():
    plain = datasets.load_numpy("digits", "train", limit=300)[0]
    ds = datasets.load("digits", "train", shuffle=True, limit=300, batch_size=64, seed=1)
    first, second = _epochs(ds, 2)
    assert not np.array_equal(first, plain) and not np.array_equal(first, second)
    np.testing.assert_array_equal(np.sort(first, axis=0), np.sort(plain, axis=0))
    np.testing.assert_array_equal(_epochs(datasets.load("digits", "train", shuffle=True, limit=300,
                                                        batch_size=64, seed=1), 1)[0], first)


def test_batching_labels_prefetch_and_limit():
    ds = datasets.load("digits", "test", batch_size=64, with_labels=True, prefetch=False)
    sizes = [len(x) for x, _ in ds]
    assert sizes == [64, 64, 52]
    dropped = datasets.load("digits", "test", batch_size=64, drop_remainder=True)
    assert [len(x) for x in dropped] == [64, 64]
    x, y = datasets.load_numpy("digits", "test")
    labelled = datasets.load("digits", "test", batch_size=50, with_labels=True)
    xs, ys = zip(*labelled.as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate(xs), x)
    np.testing.assert_array_equal(np.concatenate(ys), y)
    assert len(datasets.load_numpy("digits", "test", limit=17)[0]) == 17


# ----------------------------------------------------------------------------- bad input
def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="Known names: digits, mnist, fashion_mnist"):
        datasets.load("minst")


def test_missing_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        datasets.load(str(tmp_path / "nope.npz"))


def test_corrupt_npz_names_path(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match=r"Cannot read .*broken\.npz"):
        datasets.load(str(path))


def test_npz_without_known_arrays_lists_them(tmp_path):
    path = tmp_path / "odd.npz"
    np.savez(path, a=np.zeros((20, 4)), b=np.zeros((20, 4)))
    with pytest.raises(ValueError, match=r"holds arrays \['a', 'b'\]"):
        datasets.load(str(path))


def test_npz_wrong_dtype_shapes_labels_and_range_are_named(tmp_path):
    strings = tmp_path / "strings.npz"
    np.savez(strings, train=np.array([["a"] * 4] * 20), test=np.array([["a"] * 4] * 5))
    with pytest.raises(ValueError, match="dtype <U1"):
        datasets.load(str(strings))
    mismatch = tmp_path / "mismatch.npz"
    np.savez(mismatch, train=np.zeros((20, 4)), test=np.zeros((5, 5)))
    with pytest.raises(ValueError, match=r"split 'test' has examples shaped \(5,\)"):
        datasets.load(str(mismatch))
    labels = tmp_path / "labels.npz"
    np.savez(labels, train=np.zeros((20, 4)), test=np.zeros((5, 4)), train_labels=np.zeros(3, int))
    with pytest.raises(ValueError, match=r"labels of split 'train' have shape \(3,\)"):
        datasets.load(str(labels))
    big = tmp_path / "big.npz"
    np.savez(big, train=np.full((20, 4), 1000.0), test=np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"values in \[0, 1000\]"):
        datasets.load(str(big))


def test_corrupt_idx_names_path(tmp_path):
    truncated = tmp_path / "cut-images-idx3-ubyte"
    write_idx(truncated, np.zeros((10, 4, 4), np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"cut-images-idx3-ubyte is truncated"):
        datasets.load(str(truncated))
    garbage = tmp_path / "junk-images-idx3-ubyte.gz"
    garbage.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"Cannot read .*junk-images-idx3-ubyte\.gz"):
        datasets.load(str(garbage))
    magic = tmp_path / "bad.idx"
    magic.write_bytes(b"\x01\x02\x03\x04" + bytes(20))
    with pytest.raises(ValueError, match=r"bad\.idx is not an IDX file"):
        datasets.load(str(magic))


def test_bad_split_binarize_and_batch_size_are_named():
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        datasets.load("digits", "dev")
    with pytest.raises(ValueError, match="binarize must be None, 'static' or 'dynamic'"):
        datasets.load("digits", binarize="yes")
    with pytest.raises(ValueError, match="cannot do"):
        datasets.load_numpy("digits", binarize="dynamic")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        datasets.load("digits", batch_size=0)


def test_tfds_unavailable_offline_names_the_fix(tmp_path):
    with pytest.raises(datasets.DatasetNotAvailable, match="offline, use the 'digits' dataset"):
        datasets.load("mnist", data_dir=str(tmp_path), download=False)
