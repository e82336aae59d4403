"""keras-vae: variational autoencoders for Keras 3 (TensorFlow, JAX or PyTorch backend).

Public API, re-exported from private modules:

    import keras_vae as kv
    vae = kv.VAE.kingma_welling(input_dim=784, latent_dim=20)
"""

__version__ = "0.1.0"

from keras_vae import datasets, distribute, evaluation, networks, plots, zoo
from keras_vae.exporting import export
from keras_vae.distributions import (
    bernoulli_log_likelihood,
    gaussian_log_likelihood,
    kl_divergence,
    kl_to_standard_normal,
    kl_to_standard_normal_tril,
)
from keras_vae.layers import MaskedConv2D, Sampling, ScaleTril
from keras_vae.model import VAE
from keras_vae.detector import VAEDetector
from keras_vae.training import KLWarmup, ResumableEarlyStopping, StopOnNaN

__all__ = [
    "VAE",
    "VAEDetector",
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
