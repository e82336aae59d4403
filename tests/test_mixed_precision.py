"""Mixed precision: the networks compute in 16 bits, the ELBO's terms stay float32."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_vae as kv


@pytest.fixture
def policy():
    yield keras.mixed_precision.set_dtype_policy
    keras.mixed_precision.set_dtype_policy("float32")


@pytest.mark.parametrize("name, tolerance", [("mixed_float16", 2e-3), ("mixed_bfloat16", 1.5e-2)])
def test_mixed_precision_matches_float32(policy, binary_digits, name, tolerance):
    """Tolerance: float16 keeps 11 significant bits, bfloat16 8. Measured on this model (100
    digits, K=4): relative error of the KL 2.8e-4 (fp16) and 2.2e-3 (bf16), of the
    reconstruction 6e-6 and 4.6e-5; the bounds leave ~7x margin over the worst term."""
    x = binary_digits[1][:100]
    keras.utils.set_random_seed(0)
    reference = kv.VAE.kingma_welling(64, 4, seed=1)
    policy(name)
    mixed = kv.VAE.kingma_welling(64, 4, seed=1)
    policy("float32")
    mixed.set_weights(reference.get_weights())
    assert mixed.encoder.get_layer("hidden_0").compute_dtype == name.split("_")[1]
    assert all(w.dtype == "float32" for w in mixed.weights)

    ref_out, mix_out = reference(x), mixed(x)
    for key in ("reconstruction", "kl", "x_mean"):
        assert mix_out[key].dtype == "float32"
    for key in ("reconstruction", "kl"):
        a, b = ops.convert_to_numpy(ref_out[key]), ops.convert_to_numpy(mix_out[key])
        assert np.mean(np.abs(a - b)) / np.mean(np.abs(a)) < tolerance, key

    # one optimizer step from the same state gives the same loss and nearby weights
    reference.compile(optimizer=keras.optimizers.SGD(1e-3))
    mixed.compile(optimizer=keras.optimizers.SGD(1e-3))
    loss_ref = reference.train_on_batch(x, return_dict=True)["loss"]
    loss_mix = mixed.train_on_batch(x, return_dict=True)["loss"]
    assert loss_mix == pytest.approx(loss_ref, rel=tolerance)
    if name == "mixed_float16":
        assert isinstance(mixed.optimizer, keras.optimizers.LossScaleOptimizer)
