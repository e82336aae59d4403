"""Rewrites of converted ONNX graphs that keep their numbers and make onnxruntime faster."""

import numpy as np

_ELEMENTWISE = {"Relu", "LeakyRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Softplus", "Identity"}


def conv_as_transpose_pays(out_channels, in_channels):
    """Whether onnxruntime's CPU ConvTranspose computes a stride-1 convolution faster than its
    Conv does. Measured by benchmarks/export_latency.py ("graph_rewrites"; benchmarks/README.md,
    "Export latency") for 3x3 kernels on 28x28 maps on an AVX-512 CPU: 1.15-3.5x faster at
    batch 1 and 64 with at most 4 output channels and at least 8 input channels per output
    channel; with fewer input channels ConvTranspose's col2im step can cost more than Conv's
    padded channel block wastes (4 -> 4 channels: 0.22x at batch 64), and from 8 output
    channels on Conv wastes little or nothing."""
    return out_channels <= 4 and in_channels >= 8 * out_channels


def tidy_onnx(model, conv_as_transpose=conv_as_transpose_pays):
    """Three exact rewrites of tf2onnx's output that onnxruntime does not do itself.

    A decoder that projects z to an NHWC feature map (Dense -> Reshape (h, w, c)) gets a
    Transpose to NCHW before its first convolution: it is folded into the projection's
    weights (their columns permuted), so the Reshape yields NCHW directly. An elementwise op
    on an output's pre-Reshape tensor (the sigmoid that turns x_logits into x_mean) is moved
    after the Reshape, onto the output itself. Each saves an op per call (together ~4% of
    the conv decoder's batch-1 latency). And a stride-1 convolution to a few channels (a
    decoder's last, to 1 or 3 image channels) becomes the ConvTranspose with the flipped
    kernel that computes the same map: onnxruntime's CPU Conv works on blocks of 8 (AVX2) or
    16 (AVX-512) output channels (NCHWc) and costs as much for 1 channel as for a full block,
    whereas its ConvTranspose is one GEMM sized by the channels there are; it is done where
    `conv_as_transpose(out_channels, in_channels)` says that pays (16-21% of the default conv
    decoder's batch-1 latency). The export's parity check covers all three.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}

    def consumers(name):
        return [n for n in graph.node if name in n.input]

    def producer(name):
        return next((n for n in graph.node if name in n.output), None)

    def const(name):
        return numpy_helper.to_array(inits[name]) if name in inits else None

    replaced = set()

    def set_const(name, array):
        replaced.add(name)
        fresh = f"{name}__tidy"  # a new initializer: the old one may have other users
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), fresh))
        return fresh

    def sole_consumer(node):
        users = consumers(node.output[0])
        return users[0] if len(users) == 1 and node.output[0] not in outputs else None

    for transpose in [n for n in graph.node if n.op_type == "Transpose"]:
        if [list(a.ints) for a in transpose.attribute if a.name == "perm"] != [[0, 3, 1, 2]]:
            continue
        reshape = producer(transpose.input[0])
        shape = const(reshape.input[1]) if reshape is not None and reshape.op_type == "Reshape" \
            else None
        if shape is None or len(shape) != 4 or sole_consumer(reshape) is not transpose:
            continue
        node = producer(reshape.input[0])  # back over elementwise ops (they commute with the
        while node is not None and node.op_type in _ELEMENTWISE and sole_consumer(node):
            node = producer(node.input[0])  # permutation) to the Add and MatMul
        bias = None
        if node is not None and node.op_type == "Add" and sole_consumer(node):
            bias_at = [i for i, name in enumerate(node.input) if const(name) is not None]
            if len(bias_at) != 1 or const(node.input[bias_at[0]]).ndim != 1:
                continue
            bias, node = (node, bias_at[0]), producer(node.input[1 - bias_at[0]])
        if node is None or node.op_type != "MatMul" or const(node.input[1]) is None \
                or not sole_consumer(node):
            continue
        _, h, w, c = (int(d) for d in shape)
        order = np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
        node.input[1] = set_const(node.input[1], const(node.input[1])[:, order])
        if bias is not None:
            add, at = bias
            add.input[at] = set_const(add.input[at], const(add.input[at])[order])
        reshape.input[1] = set_const(reshape.input[1],
                                     np.array([shape[0], c, h, w], dtype=shape.dtype))
        for user in consumers(transpose.output[0]):
            user.input[:] = [reshape.output[0] if i == transpose.output[0] else i
                             for i in user.input]
        graph.node.remove(transpose)

    for reshape in [n for n in graph.node if n.op_type == "Reshape" and n.output[0] in outputs]:
        op = producer(reshape.input[0])
        if op is None or op.op_type not in _ELEMENTWISE or sole_consumer(op) is not reshape:
            continue
        twin = next((n for n in consumers(op.input[0]) if n.op_type == "Reshape"
                     and n.output[0] in outputs and n.input[1] == reshape.input[1]), None)
        if twin is None:
            continue
        graph.node.remove(op)
        graph.node.remove(reshape)
        op.input[0], op.output[0] = twin.output[0], reshape.output[0]
        graph.node.append(op)  # after its new input's producer: the order stays topological

    for conv in [n for n in graph.node if n.op_type == "Conv"]:
        weight = const(conv.input[1])  # (out channels, in channels, kh, kw)
        if weight is None or weight.ndim != 4 or not conv_as_transpose(*weight.shape[:2]):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        kh, kw = weight.shape[2:]
        top, left, bottom, right = attrs.get("pads", (0, 0, 0, 0))
        # y[o] = sum_j x[o + j - pad] w[j] is a transposed convolution of x with the flipped
        # kernel and padding k - 1 - pad on each side (same output size).
        pads = [kh - 1 - top, kw - 1 - left, kh - 1 - bottom, kw - 1 - right]
        if attrs.get("group", 1) != 1 or set(attrs.get("strides", [1])) != {1} \
                or set(attrs.get("dilations", [1])) != {1} or min(pads) < 0 \
                or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        conv.input[1] = set_const(conv.input[1], weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        conv.op_type = "ConvTranspose"
        del conv.attribute[:]
        conv.attribute.extend([helper.make_attribute("kernel_shape", [kh, kw]),
                               helper.make_attribute("pads", pads),
                               helper.make_attribute("strides", [1, 1])])
    unused = replaced - {x for n in graph.node for x in n.input}
    for init in [i for i in graph.initializer if i.name in unused]:
        graph.initializer.remove(init)
    return model
