"""The TF-free runtime of keras-vae bundles: NumPy and onnxruntime only.

Importing it never imports TensorFlow or Keras (`keras_vae` does), so it runs where only
`pip install numpy onnxruntime` is possible. `keras_vae_runtime/runtime.py` is a single
self-contained file; every bundle written by `keras-vae export` holds a copy as
`vae_runtime.py`.

    from keras_vae_runtime import ExportedVAE
    vae = ExportedVAE("bundle/")
    x, z = vae.sample(16, seed=0)

Command line: `keras-vae-runtime info|sample|decode|encode|score BUNDLE ...` (the same as
`python vae_runtime.py ...` inside a bundle, or `python -m keras_vae_runtime ...`).
"""

from keras_vae_runtime.runtime import (
    PRECISION_SUFFIX,
    ExportedVAE,
    RuntimeInputError,
    image_grid,
    load_inputs,
    main,
    write_png,
)

__all__ = ["ExportedVAE", "RuntimeInputError", "PRECISION_SUFFIX", "image_grid", "load_inputs",
           "main", "write_png"]
