"""keras-vae: variational autoencoders for Keras 3 (TensorFlow, JAX or PyTorch backend).

Public API, re-exported from private modules:

    import keras_vae as kv
    vae = kv.VAE.kingma_welling(input_dim=784, latent_dim=20)
"""

import sys as _sys

if _sys.argv[:1] == ["-m"] and __name__ == "keras_vae":
    # `python -m keras_vae ...`: the command line, which starts TensorFlow without its C++ log
    # lines before this package imports it (see keras_vae_cli).
    from keras_vae_cli import quiet_start as _quiet_start

    _quiet_start(verbose="--verbose" in _sys.argv)

# Quiet by default: TensorFlow's C++ logging (absl, gRPC) is read when TensorFlow loads, so it
# is set before anything imports it, and TensorFlow (when it is Keras's backend) is started
# with the lines it writes from C++ regardless ("I0000 ... cudart_stub.cc ...") filtered out;
# KERAS_VAE_VERBOSE=1 (or values set by the caller) win.
from keras_vae_cli import verbose_requested as _verbose_requested  # noqa: E402

if not _verbose_requested():
    from keras_vae_cli import configured_backend as _configured_backend
    from keras_vae_cli import quiet_environment as _quiet_environment
    from keras_vae_cli import start_tensorflow_quietly as _start_tensorflow_quietly

    _quiet_environment()
    if _configured_backend() == "tensorflow":
        _start_tensorflow_quietly()

from keras_vae.version import __version__  # noqa: E402

from keras_vae import datasets, distribute, evaluation, networks, plots, zoo
from keras_vae.callbacks import KLWarmup, ResumableEarlyStopping, StopOnNaN
from keras_vae.distributions import (
    bernoulli_log_likelihood,
    gaussian_log_likelihood,
    kl_divergence,
    kl_to_standard_normal,
    kl_to_standard_normal_tril,
)
from keras_vae.exporting import export
from keras_vae.layers import MaskedConv2D, Sampling, ScaleTril
from keras_vae.model import VAE, NonFiniteLoss
from keras_vae.hierarchical import HierarchicalVAE
from keras_vae.detector import VAEDetector

__all__ = [
    "VAE",
    "HierarchicalVAE",
    "VAEDetector",
    "NonFiniteLoss",
    "export",
    "Sampling",
    "MaskedConv2D",
    "ScaleTril",
    "networks",
    "datasets",
    "plots",
    "KLWarmup",
    "StopOnNaN",
    "ResumableEarlyStopping",
    "distribute",
    "evaluation",
    "zoo",
    "kl_divergence",
    "kl_to_standard_normal",
    "kl_to_standard_normal_tril",
    "bernoulli_log_likelihood",
    "gaussian_log_likelihood",
]
