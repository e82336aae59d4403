"""float16 and int8 variants of the ONNX graphs."""

import logging
from pathlib import Path


def to_fp16(model):
    """float16 weights and arithmetic, float32 inputs and outputs (onnxruntime's converter)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    half = convert_float_to_float16(model, keep_io_types=True)
    wrapper = OnnxModel(half)
    wrapper.topological_sort()  # the converter appends its input casts at the end
    return wrapper.model


def to_int8(model, input_name, calibration, work_dir):
    """int8 quantization with onnxruntime's tools; returns (ModelProto, method).

    As onnxruntime advises: dynamic quantization (int8 weights, activations quantized on the
    fly; no calibration) for MatMul-only graphs such as the MLPs; static QDQ quantization,
    calibrated on `calibration` inputs, for convolutional graphs. Dynamic quantization leaves
    ConvTranspose in float and runs Conv through the slow ConvInteger kernel, whereas QDQ
    quantizes both and onnxruntime fuses QDQ Conv into QLinearConv.

    Weights are quantized to 7 bits (onnxruntime's reduce_range): x86 processors without
    VNNI (AVX2, AVX-512 without VNNI) multiply uint8 activations by int8 weights with an
    instruction whose int16 sums saturate, which put a 12-epoch digits MLP's int8 encoder 0.17
    off its fp32 graph on an AVX2 machine (within 0.014 with 7-bit weights), while the same
    file was within budget on a VNNI machine. With 7 bits the measured error holds wherever the
    file runs.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    source, prepared, quantized = (work_dir / n for n in ("fp32.onnx", "prep.onnx", "int8.onnx"))
    onnx.save(model, source)
    quant_logger = logging.getLogger()
    level = quant_logger.level
    quant_logger.setLevel(logging.ERROR)  # its "consider pre-processing" warnings
    try:
        quant_pre_process(str(source), str(prepared))
        if any(n.op_type in ("Conv", "ConvTranspose") for n in model.graph.node):
            class Reader(CalibrationDataReader):
                def __init__(self, batch_size=32):
                    self.batches = iter([{input_name: calibration[i:i + batch_size]}
                                         for i in range(0, len(calibration), batch_size)])

                def get_next(self):
                    return next(self.batches, None)

            reader = Reader()
            quantize_static(str(prepared), str(quantized), reader, quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            per_channel=True, reduce_range=True)
            method = ("static QDQ (uint8 activations, 7-bit int8 per-channel weights), "
                      f"calibrated on {len(calibration)} inputs")
        else:
            quantize_dynamic(str(prepared), str(quantized), weight_type=QuantType.QInt8,
                             reduce_range=True)
            method = "dynamic (7-bit int8 weights, activations quantized at run time)"
    finally:
        quant_logger.setLevel(level)
    return onnx.load(str(quantized)), method
