"""Keras graphs to ONNX (tf2onnx), with metadata and the manifest's output order."""

import json
import logging

from keras_vae.exporting.formats import ExportError, signature_names
from keras_vae.exporting.onnx_rewrites import tidy_onnx

_ONNX_RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                    "Multinomial", "Bernoulli"}


def onnx_metadata(vae, name, component, precision, opset):
    from keras_vae.version import __version__

    return {
        "model_name": name,
        "component": component,
        "latent_dim": str(vae.latent_dim),
        "input_shape": json.dumps(list(vae.input_shape_)),
        "likelihood": vae.likelihood,
        "posterior": vae.posterior,
        "keras_vae_version": __version__,
        "precision": precision,
        "opset": str(opset),
        "signature": json.dumps(dict(zip(("input", "outputs"),
                                         signature_names(vae)[component]))),
    }


def finish_onnx(model, metadata, output_order, input_order=None, doc_string=None):
    """Names the batch axis "batch", orders inputs and outputs, writes metadata_props and the
    doc_string, checks the model."""
    import onnx

    graph = model.graph
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    by_name = {o.name: o for o in graph.output}
    if set(by_name) == set(output_order):
        ordered = [by_name[n] for n in output_order]
        del graph.output[:]
        graph.output.extend(ordered)
    by_name = {i.name: i for i in graph.input}
    if input_order is not None and set(by_name) == set(input_order):
        ordered = [by_name[n] for n in input_order]
        del graph.input[:]
        graph.input.extend(ordered)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata)
    model.doc_string = doc_string or (
        f"keras-vae {metadata['component']} of {metadata['model_name']} "
        f"({metadata['precision']}); signature {metadata['signature']}")
    onnx.checker.check_model(model, full_check=True)
    random_ops = sorted({n.op_type for n in graph.node} & _ONNX_RANDOM_OPS)
    if random_ops:
        raise ExportError(f"The ONNX {metadata['component']} contains random ops {random_ops}.")
    return model


def to_onnx(graphs, component, opset):
    import tf2onnx

    spec = graphs.input_specs[component]
    tf2onnx_logger = logging.getLogger("tf2onnx")
    level = tf2onnx_logger.level
    tf2onnx_logger.setLevel(logging.ERROR)
    try:
        model, _ = tf2onnx.convert.from_function(graphs.tf_function(component),
                                                 input_signature=spec, opset=opset)
    finally:
        tf2onnx_logger.setLevel(level)
    return tidy_onnx(model)
