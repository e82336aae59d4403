"""PNG pictures of a VAE run: training curves, image grids, the latent space, the manifold.

Image grids are written pixel for pixel (`save_image_grid`: each value in [0, 1] becomes one
grey level, tiles upscaled by an integer factor), so what a PNG shows is exactly the data.
Charts use matplotlib's object API with the Agg canvas: no pyplot state, no display needed.
"""

import math
import statistics

import numpy as np

from keras_vae.files import atomic_path


def _figure(width, height):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def as_images(x, image_shape):
    """Reshapes a batch (n, ...) to images (n, H, W, C) given the per-example `image_shape`."""
    image_shape = tuple(image_shape)
    if len(image_shape) == 2:
        image_shape = image_shape + (1,)
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (H, W) or (H, W, C), got {image_shape}.")
    x = np.asarray(x, dtype="float32")
    if int(np.prod(x.shape[1:])) != math.prod(image_shape):
        raise ValueError(f"Cannot show examples of shape {x.shape[1:]} as {image_shape} images.")
    return x.reshape((len(x),) + image_shape)


def tile_images(images, ncols=None, pad=1, pad_value=1.0):
    """Arranges images (n, H, W, C) row by row into one (rows*(H+pad)-pad, ...) array.

    Args:
        images: (n, H, W, C) values in [0, 1]; C is 1 or 3.
        ncols: images per row (default: ceil(sqrt(n))).
        pad: pixels between tiles, filled with `pad_value`; empty cells are filled too.

    Returns:
        (rows*(H+pad)-pad, ncols*(W+pad)-pad, C) float32 array.
    """
    images = np.asarray(images, dtype="float32")
    n, height, width, channels = images.shape
    ncols = int(ncols or math.ceil(math.sqrt(n)))
    rows = math.ceil(n / ncols)
    grid = np.full((rows * (height + pad) - pad, ncols * (width + pad) - pad, channels),
                   pad_value, dtype="float32")
    for i, image in enumerate(images):
        r, c = divmod(i, ncols)
        grid[r * (height + pad):r * (height + pad) + height,
             c * (width + pad):c * (width + pad) + width] = image
    return grid


def _upscale(images, min_tile_pixels):
    """Clips to [0, 1] and enlarges (n, H, W, C) by the integer factor ceil(min_tile_pixels/H)."""
    images = np.clip(np.asarray(images, dtype="float32"), 0.0, 1.0)
    factor = max(1, math.ceil(min_tile_pixels / images.shape[1]))
    return images.repeat(factor, axis=1).repeat(factor, axis=2), factor


def _write_png(grid, path):
    """8-bit grey (C=1) or RGB (C=3) PNG of values in [0, 1], rounded to the nearest level."""
    from PIL import Image  # pillow ships with matplotlib
    pixels = np.round(np.clip(grid, 0.0, 1.0) * 255).astype("uint8")
    image = (Image.fromarray(pixels[..., 0], mode="L") if pixels.shape[-1] == 1
             else Image.fromarray(pixels, mode="RGB"))
    with atomic_path(path) as tmp:  # a temporary name, then os.replace
        image.save(tmp, format="png")


def save_image_grid(images, path, ncols=None, min_tile_pixels=28, pad=1):
    """Writes images (n, H, W, C) in [0, 1] as one PNG grid, pixel for pixel.

    Each tile is enlarged by the integer factor ceil(min_tile_pixels / H) (nearest neighbour) so
    8x8 digits stay visible; `pad` (in original pixels) separates tiles in white. Values are
    clipped to [0, 1]; 0 is black, 1 white.

    Returns:
        The (rows, cols, C) float array written (before conversion to 8-bit grey or RGB).
    """
    images, factor = _upscale(images, min_tile_pixels)
    grid = tile_images(images, ncols, pad=pad * factor)
    _write_png(grid, path)
    return grid


def save_reconstructions(originals, reconstructions, path, ncols=None, min_tile_pixels=28):
    """Writes a PNG with the originals (n, H, W, C) in the top rows and their reconstructions
    in the same grid positions below, separated by a grey band. Returns the array written."""
    if np.shape(originals) != np.shape(reconstructions):
        raise ValueError(f"originals {np.shape(originals)} and reconstructions "
                         f"{np.shape(reconstructions)} must have the same shape.")
    ncols = int(ncols or min(len(originals), 16))
    top, factor = _upscale(originals, min_tile_pixels)
    bottom, _ = _upscale(reconstructions, min_tile_pixels)
    top, bottom = tile_images(top, ncols, pad=factor), tile_images(bottom, ncols, pad=factor)
    band = np.full((2 * factor,) + top.shape[1:], 0.5, dtype="float32")
    grid = np.concatenate([top, band, bottom])
    _write_png(grid, path)
    return grid


def latent_manifold_grid(n=15, low=0.05, high=0.95):
    """Latent points z of a K=2 manifold plot: the n x n grid of prior quantiles.

    Coordinates are the standard normal inverse CDF of n evenly spaced probabilities in
    [low, high] (Kingma & Welling 2013, fig. 4). Row i, column j holds z = (q_j, q_{n-1-i}),
    so z_1 grows to the right and z_2 upwards.

    Returns:
        (n*n, 2) float32 array in row-major grid order.
    """
    normal = statistics.NormalDist()
    q = np.array([normal.inv_cdf(p) for p in np.linspace(low, high, n)], dtype="float32")
    z1, z2 = np.meshgrid(q, q[::-1])
    return np.stack([z1.ravel(), z2.ravel()], axis=1)


def save_latent_manifold(decode, image_shape, path, n=15):
    """Decodes the K=2 grid of `latent_manifold_grid(n)` with `decode(z) -> (m, ...)` means and
    writes it as one PNG (n x n tiles). Returns the grid's latent points (n*n, 2)."""
    z = latent_manifold_grid(n)
    save_image_grid(as_images(decode(z), image_shape), path, ncols=n)
    return z


def latent_coordinates(z_mean):
    """2-D coordinates for a scatter of latent means (n, K): the means themselves for K=2,
    (z, 0) for K=1, and the first two principal components for K>2.

    Returns:
        (coords (n, 2), axis labels (2 str), explained variance ratio of the two axes or None).
    """
    z_mean = np.asarray(z_mean, dtype="float64")
    k = z_mean.shape[1]
    if k == 1:
        return np.concatenate([z_mean, np.zeros_like(z_mean)], 1), ("z_1", ""), None
    if k == 2:
        return z_mean, ("z_1", "z_2"), None
    from sklearn.decomposition import PCA
    pca = PCA(n_components=2).fit(z_mean)
    ratio = pca.explained_variance_ratio_
    return pca.transform(z_mean), (f"PC 1 ({ratio[0]:.0%} of variance)",
                                   f"PC 2 ({ratio[1]:.0%} of variance)"), ratio


def save_latent_scatter(z_mean, labels, path, title="Latent means of test data"):
    """Scatter of the posterior means (n, K) coloured by integer labels (n,) or None
    (PCA for K>2, see `latent_coordinates`). Returns the plotted (n, 2) coordinates."""
    coords, (xlabel, ylabel), _ = latent_coordinates(z_mean)
    fig = _figure(6, 5)
    ax = fig.add_subplot()
    if labels is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=6, alpha=0.7)
    else:
        labels = np.asarray(labels)
        classes = np.unique(labels)
        cmap = "tab10" if len(classes) <= 10 else "viridis"
        points = ax.scatter(coords[:, 0], coords[:, 1], c=labels, s=6, alpha=0.8, cmap=cmap)
        bar = fig.colorbar(points, ax=ax, label="label")
        if len(classes) <= 10:
            bar.set_ticks(classes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    k = np.asarray(z_mean).shape[1]
    ax.set_title(title + (f" (PCA of K={k})" if k > 2 else ""))
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    return coords


#: Panels of `save_training_curves`: (metric key, title).
CURVE_PANELS = (("neg_elbo", "-ELBO (nats per example)"),
                ("reconstruction", "Reconstruction error (nats)"),
                ("kl", "KL(q(z|x) || p(z)) (nats)"),
                ("loss", "Training loss (beta-weighted)"))


def save_training_curves(history, path):
    """Plots per-epoch metrics: -ELBO, reconstruction, KL and loss, training and validation
    (`val_` keys), plus beta on the loss panel when warm-up changed it.

    Args:
        history: dict of equal-length lists: "epoch" (0-based) and metric keys as logged by
            Keras (`neg_elbo`, `val_neg_elbo`, ..., `beta`).

    Returns:
        The matplotlib Figure (its axes hold the plotted lines).
    """
    from matplotlib.ticker import MaxNLocator
    epochs = np.asarray(history.get("epoch", range(len(history["loss"]))), dtype=int) + 1
    fig = _figure(10, 7)
    axes = fig.subplots(2, 2).ravel()
    for ax, (key, title) in zip(axes, CURVE_PANELS):
        for prefix, name in (("", "training"), ("val_", "validation")):
            if prefix + key in history:
                ax.plot(epochs, history[prefix + key], label=name, marker="." if len(epochs) < 30
                        else None)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right")
    if "beta" in history and len(set(np.round(history["beta"], 9))) > 1:
        twin = axes[3].twinx()
        twin.plot(epochs, history["beta"], color="grey", linestyle="--", label="beta")
        twin.set_ylabel("beta (KL weight)")
        twin.legend(loc="center right")
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    return fig
