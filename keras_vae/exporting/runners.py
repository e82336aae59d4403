"""Running exported SavedModels and ONNX files, for parity checks."""


# --------------------------------------------------------------------------- runners
def saved_model_runner(path, input_name):
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]

    def run(inputs):
        feeds = inputs if isinstance(inputs, dict) else {input_name: inputs}
        outputs = signature(**{k: tf.constant(v) for k, v in feeds.items()})
        return {name: value.numpy() for name, value in outputs.items()}

    return run


def onnx_runner(path):
    """A function mapping one input array (or a dict of named inputs) to the dict of named
    outputs of an ONNX file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]

    def run(inputs):
        feeds = inputs if isinstance(inputs, dict) else {input_name: inputs}
        return dict(zip(names, session.run(names, feeds)))

    return run
