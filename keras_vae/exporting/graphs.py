"""The deterministic float32 encoder and decoder graphs that every format is made from, and
their SavedModels."""

import numpy as np

from keras_vae.exporting.formats import COMPONENTS, ExportError, signature_names

_TF_RANDOM_MARKERS = ("Random", "Multinomial", "TruncatedNormal")


# --------------------------------------------------------------------------- the graphs
def _float32_model(model):
    """`model` itself when it computes in float32, else a float32 copy with the same weights
    (a mixed-precision model still exports float32 graphs)."""
    import keras

    if all(getattr(layer, "compute_dtype", "float32") == "float32" for layer in model.layers):
        return model

    def to_float32(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    clone = keras.models.clone_model(model, clone_function=to_float32)
    clone.set_weights(model.get_weights())
    return clone


class Graphs:
    """The serving functions of one VAE (TensorFlow ops around the Keras sub-models), and the
    Keras reference each exported artifact is compared with."""

    def __init__(self, vae):
        import tensorflow as tf
        from keras import ops

        self.vae = vae
        self.encoder = _float32_model(vae.encoder)
        self.decoder = _float32_model(vae.decoder)
        names = signature_names(vae)
        self.output_names = {c: names[c][1] for c in COMPONENTS}
        # Input specs in positional order (an autoregressive decoder reads (z, x)).
        x_spec = tf.TensorSpec((None,) + tuple(vae.input_shape_), tf.float32, name="x")
        z_spec = tf.TensorSpec((None, vae.latent_dim), tf.float32, name="z")
        self.autoregressive = bool(getattr(vae, "autoregressive", False))
        self.input_specs = {"encoder": [x_spec],
                            "decoder": [z_spec, x_spec] if self.autoregressive else [z_spec]}
        self.specs = {c: self.input_specs[c][0] for c in COMPONENTS}  # the first input's
        self.input_names = {c: tuple(s.name for s in self.input_specs[c]) for c in COMPONENTS}
        if vae.likelihood == "gaussian":
            self.decoder_log_var = np.asarray(ops.convert_to_numpy(vae.decoder_log_variance()),
                                              dtype="float32")
        encoder, decoder = self.encoder, self.decoder
        enc_names = self.output_names["encoder"]
        bernoulli = vae.likelihood == "bernoulli"
        # location-scale likelihoods (keras_vae.likelihoods): the decoder returns (B, D, 2)
        self.location_scale = vae.likelihood not in ("bernoulli", "gaussian")
        location_scale = self.location_scale
        log_var = None if bernoulli or location_scale else self.decoder_log_var

        def encode(x):
            z_mean, z_scale = encoder(x, training=False)
            return {enc_names[0]: z_mean, enc_names[1]: z_scale}

        def decode(z):
            params = decoder(z, training=False)
            if bernoulli:
                return {"x_mean": tf.sigmoid(params), "x_logits": params}
            if location_scale:
                return {"x_mean": params[..., 0], "x_log_scale": params[..., 1]}
            # A NumPy constant becomes a Const node (a captured tensor would be a graph input).
            return {"x_mean": params, "x_log_var": tf.zeros_like(params) + tf.constant(log_var)}

        def decode_autoregressive(z, x):
            return {"x_logits": decoder([z, x], training=False)}

        self.functions = {"encoder": encode,
                          "decoder": decode_autoregressive if self.autoregressive else decode}
        self.keras_models = {"encoder": encoder, "decoder": decoder}
        for component in COMPONENTS:
            self._check_deterministic(component)

    def tf_function(self, component):
        import tensorflow as tf

        return tf.function(self.functions[component],
                           input_signature=self.input_specs[component])

    def _check_deterministic(self, component):
        graph_def = self.tf_function(component).get_concrete_function().graph.as_graph_def()
        nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
        random_ops = sorted({n.op for n in nodes if any(m in n.op for m in _TF_RANDOM_MARKERS)})
        if random_ops:
            raise ExportError(
                f"The {component} contains random ops {random_ops}; exported graphs must be "
                "deterministic. Keep sampling outside the encoder and decoder (the VAE's "
                "Sampling layer does it between them).")

    def reference(self, component, inputs):
        """What the Keras model computes: the dict of named outputs as NumPy arrays."""
        from keras import ops

        model = self.keras_models[component]
        if isinstance(inputs, dict):  # named inputs (the autoregressive decoder's z and x)
            params = model([ops.convert_to_tensor(inputs[n], dtype="float32")
                            for n in self.input_names[component]], training=False)
            if self.autoregressive and component == "decoder":
                return {"x_logits": ops.convert_to_numpy(params)}
        else:
            params = model(ops.convert_to_tensor(inputs, dtype="float32"), training=False)
        if component == "encoder":
            names = self.output_names["encoder"]
            return {names[0]: ops.convert_to_numpy(params[0]),
                    names[1]: ops.convert_to_numpy(params[1])}
        params = ops.convert_to_numpy(params)
        if self.vae.likelihood == "bernoulli":
            return {"x_mean": ops.convert_to_numpy(ops.sigmoid(params)), "x_logits": params}
        if self.location_scale:
            return {"x_mean": params[..., 0].copy(), "x_log_scale": params[..., 1].copy()}
        return {"x_mean": params,
                "x_log_var": np.broadcast_to(self.decoder_log_var, params.shape).copy()}


# --------------------------------------------------------------------------- writers
def write_saved_model(graphs, component, path):
    import keras

    archive = keras.export.ExportArchive()
    archive.track(graphs.keras_models[component])
    archive.add_endpoint("serving_default", graphs.functions[component],
                         input_signature=graphs.input_specs[component])
    archive.write_out(str(path), verbose=False)
