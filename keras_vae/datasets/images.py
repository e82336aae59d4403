"""Folders of images (PNG, JPEG, BMP, GIF) as NumPy arrays, read by Keras's own
`keras.utils.image_dataset_from_directory`.

    from keras_vae.datasets import images
    x, labels, class_names = images.load_image_folder("photos/", image_size=(28, 28),
                                                      grayscale=True)

A folder with one subfolder per class gives labels 0, 1, ... in the subfolders' alphabetical
order; images directly inside the folder give no labels. Pixels are float32 in [0, 1], shaped
(n, H, W, C) with C = 1 (grayscale) or 3.
"""

import os

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def _image_files(folder):
    found = []
    for root, _, files in os.walk(folder):
        found += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_SUFFIXES)]
    return sorted(found)


def is_image_folder(path):
    """True for a directory holding image files (directly or in class subfolders)."""
    path = os.fspath(path)
    return os.path.isdir(path) and bool(_image_files(path))


def _default_size_and_mode(first_file):
    from PIL import Image
    with Image.open(first_file) as image:
        return (image.height, image.width), image.mode in ("1", "L", "LA", "I", "I;16", "F")


def load_image_folder(path, image_size=None, grayscale=None, seed=0):
    """The images of a folder as arrays.

    Args:
        path: the folder (class subfolders give labels).
        image_size: (H, W) every image is resized to; default the first image's size.
        grayscale: True for one channel, False for RGB; default the first image's mode.
        seed: seed of Keras's file order shuffle (the returned order is sorted by file name
            within each class anyway, so it does not change the result).

    Returns:
        (x float32 (n, H, W, C) in [0, 1], labels int64 (n,) or None, class names list).

    Raises:
        FileNotFoundError: not a folder. ValueError: no images found.
    """
    import keras

    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Image folder not found: {path}")
    files = _image_files(path)
    if not files:
        raise ValueError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    size, gray = _default_size_and_mode(files[0])
    image_size = tuple(image_size or size)
    grayscale = gray if grayscale is None else bool(grayscale)
    subfolders = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    labelled = bool(subfolders) and all(
        os.path.dirname(f) != os.path.abspath(path) and os.path.dirname(f) != path
        for f in files)
    ds = keras.utils.image_dataset_from_directory(
        path, labels="inferred" if labelled else None, label_mode="int",
        color_mode="grayscale" if grayscale else "rgb", image_size=image_size,
        batch_size=256, shuffle=False, seed=seed, verbose=False)
    class_names = list(getattr(ds, "class_names", None) or [])
    xs, ys = [], []
    for batch in ds.as_numpy_iterator():
        if labelled:
            xs.append(batch[0])
            ys.append(batch[1])
        else:
            xs.append(batch)
    x = np.concatenate(xs).astype("float32") / 255.0
    labels = np.concatenate(ys).astype("int64") if labelled else None
    return x, labels, class_names
