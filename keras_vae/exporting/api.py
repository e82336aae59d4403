"""`keras_vae.export`: write, check and describe every artifact of a VAE."""

import datetime
import json
import shutil
import tempfile
import time
from pathlib import Path

from keras_vae import web as web_app
from keras_vae.exporting.files import check_out_dir, file_entries, move_into_place
from keras_vae.exporting.formats import (
    COMPONENTS,
    DEFAULT_FORMATS,
    MAX_OPSET,
    MIN_OPSET,
    PRECISION,
    ExportError,
    artifact_path,
    normalize_formats,
)
from keras_vae.exporting.graphs import Graphs, write_saved_model
from keras_vae.exporting.inputs import check_inputs
from keras_vae.exporting.litert import tflite_op_names, tflite_runner, to_tflite
from keras_vae.exporting.onnx_convert import finish_onnx, onnx_metadata, to_onnx
from keras_vae.exporting.parity import measure
from keras_vae.exporting.quantize import to_fp16, to_int8
from keras_vae.exporting.runners import onnx_runner, saved_model_runner


# --------------------------------------------------------------------------- the export
def export(vae, out_dir, formats=DEFAULT_FORMATS, opset=17, overwrite=False, data=None,
           name=None, seed=0, verbose=False, ort_web=None):
    """Exports the encoder and the decoder of `vae`, checks each artifact against Keras, and
    writes `manifest.json`.

    Args:
        vae: a `keras_vae.VAE` (any posterior, likelihood, architecture; mixed-precision models
            export float32 graphs).
        out_dir: the folder to create. It must not exist or be empty unless `overwrite`; the
            export is written to a temporary sibling folder and moved into place at the end,
            so a failure leaves `out_dir` as it was.
        formats: any of `FORMATS` ("saved_model", "onnx", "onnx_fp16", "onnx_int8", "tflite",
            "tflite_int8"), or the aliases "edge" and "all"; "web" adds the fp32 ONNX files
            and a web page that runs them (`keras_vae.web`).
        opset: ONNX opset, 13 to 18.
        overwrite: replace the contents of a non-empty `out_dir`.
        data: optional array (n, *input_shape) of representative inputs: parity and error
            budgets are measured on them and int8 variants calibrated on them. Without it the
            model's own samples are used (fine for parity; a trained model's samples are
            realistic inputs, an untrained model's are noise).
        name: model name written into the metadata (default: `vae.name`).
        seed: seed of the input draws, so the manifest's numbers are reproducible.
        verbose: print one line per artifact with its size and measured error.
        ort_web: with "web": onnxruntime-web's dist folder (see `keras_vae.web.find_ort_web`).

    Returns:
        The manifest (dict), also written to `out_dir/manifest.json`: for each artifact its
        files (path, sha256, size_bytes), its measured max/mean abs difference from Keras per
        output at batch sizes 1 and 64 (and on 256 inputs for quantized variants) and its budget.

    Raises:
        FileExistsError: `out_dir` is not empty and `overwrite` is False.
        ExportError (a ValueError): an artifact exceeds its error budget, or cannot be built.
        ValueError: unknown format, bad opset, bad `data`.
    """
    import keras
    import onnx

    from keras_vae import __version__

    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"Exporting needs the TensorFlow backend (Keras runs on {keras.backend.backend()!r}): "
            "save the model (vae.save('m.keras')) and run the export with "
            "KERAS_BACKEND=tensorflow; the weights load there unchanged.")
    if getattr(vae, "autoregressive", False):
        raise ExportError(
            "This VAE's decoder is autoregressive (networks.PixelCNNDecoder): its logits read "
            "the image x as well as z, and drawing an image takes one pass per pixel, which "
            "the exported decoder's signature (z -> x_mean) cannot express. Save the model "
            "(vae.save('m.keras')) and serve it with Keras, or export a VAE with a decoder of "
            "z only (VAE.conv, VAE.mlp).")
    formats, web_dist = web_app.plan(vae, formats, ort_web)
    formats = normalize_formats(formats)
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be an integer from {MIN_OPSET} to {MAX_OPSET} (tf2onnx "
                         f"1.17 refuses higher ones), got {opset!r}; the default is 17.")
    out = check_out_dir(out_dir, overwrite)
    name = name or vae.name
    started = time.perf_counter()
    graphs = Graphs(vae)
    inputs = check_inputs(vae, graphs, data, seed)

    def log(message):
        if verbose:
            print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    scratch = Path(tempfile.mkdtemp(prefix="keras-vae-export-"))
    artifacts = []
    try:
        for component in COMPONENTS:
            input_name = graphs.input_names[component]
            eval_inputs, calibration = inputs[component]
            built = {}  # fmt -> (relative path, run function, extra manifest fields)

            needs_saved_model = any(f in formats for f in ("saved_model", "tflite",
                                                            "tflite_int8"))
            if needs_saved_model:
                sm_dir = (tmp if "saved_model" in formats else scratch) / component
                write_saved_model(graphs, component, sm_dir)
                if "saved_model" in formats:
                    built["saved_model"] = (component, saved_model_runner(sm_dir, input_name), {})
            onnx_fp32 = None
            if any(f.startswith("onnx") for f in formats):
                onnx_fp32 = to_onnx(graphs, component, opset)
            for fmt in ("onnx", "onnx_fp16", "onnx_int8"):
                if fmt not in formats:
                    continue
                extra = {}
                if fmt == "onnx":
                    model = onnx_fp32
                elif fmt == "onnx_fp16":
                    model = to_fp16(onnx_fp32)
                else:
                    model, method = to_int8(onnx_fp32, input_name, calibration,
                                               scratch / f"{component}_int8")
                    extra["quantization"] = method
                model = finish_onnx(model, onnx_metadata(vae, name, component, PRECISION[fmt],
                                                           opset),
                                     graphs.output_names[component])
                rel = artifact_path(fmt, component)
                onnx.save(model, tmp / rel)
                built[fmt] = (rel, onnx_runner(tmp / rel), extra)
            for fmt in ("tflite", "tflite_int8"):
                if fmt not in formats:
                    continue
                calib = calibration if fmt == "tflite_int8" else None
                rel = artifact_path(fmt, component)
                (tmp / rel).write_bytes(to_tflite(sm_dir, input_name, calib))
                extra = {"operators": tflite_op_names(tmp / rel)}
                if calib is not None:
                    extra["quantization"] = ("full integer where LiteRT has int8 kernels "
                                             f"(calibrated on {len(calib)} inputs), float "
                                             "elsewhere; float32 I/O")
                built[fmt] = (rel, tflite_runner(tmp / rel, input_name), extra)

            for fmt in formats:
                rel, run, extra = built[fmt]
                files = file_entries(tmp, rel)
                measured = measure(graphs, component, fmt, run, eval_inputs,
                                    data_given=data is not None)
                entry = {"path": rel, "component": component, "format": fmt,
                         "precision": PRECISION[fmt],
                         "size_bytes": sum(f["size_bytes"] for f in files), "files": files,
                         **extra, **measured}
                artifacts.append(entry)
                log(f"{rel:22s} {entry['size_bytes'] / 1024:9.1f} KiB   max |diff| "
                    f"{measured['max_abs_diff']:.2e}  mean {measured['mean_abs_diff']:.2e}")

        manifest = {
            "manifest_version": 1,
            "model_name": name,
            "keras_vae_version": __version__,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "latent_dim": vae.latent_dim,
            "input_shape": list(vae.input_shape_),
            "likelihood": vae.likelihood,
            "posterior": vae.posterior,
            "opset": opset if any(f.startswith("onnx") for f in formats) else None,
            "signatures": {
                c: {"input": graphs.input_names[c], "outputs": list(graphs.output_names[c])}
                for c in COMPONENTS},
            "check_inputs": inputs["source"],
            "error_rule": ("per output, |export - keras| / max(1, max |keras|); fails the "
                           "export above the artifact's budget"),
            "artifacts": artifacts,
        }
        if web_dist is not None:
            manifest["web"] = web_app.write_web_app(vae, tmp, name=name, ort_web=web_dist,
                                                    seed=seed, manifest=manifest)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        move_into_place(tmp, out)
        log(f"wrote {out}")
        return manifest
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
