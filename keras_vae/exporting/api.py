"""`keras_vae.export`: write, check and describe every artifact of a VAE."""

import datetime
import json
import shutil
import time
from pathlib import Path

from keras_vae import web as web_app
from keras_vae.exporting import anomaly
from keras_vae.exporting.bundle import (
    BUNDLE_LAYOUT,
    CARD_NAME,
    HOLDER_FILE,
    MANIFEST_NAME,
    MARKER,
    RUNTIME_NAME,
    SCRATCH_PREFIX,
    card,
    check_out_dir,
    clean_leftovers,
    make_temp_dir,
    runtime_source,
    source_numbers,
)
from keras_vae.exporting.contract import (
    POSITIONAL_ORDER,
    doc_string,
    model_contract,
    prior_entry,
)
from keras_vae.exporting.files import file_entries, move_into_place
from keras_vae.exporting.formats import (
    AUTOREGRESSIVE_FORMATS,
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
from keras_vae.exporting.litert import (
    order_tflite_io,
    tflite_op_names,
    tflite_runner,
    to_tflite,
)
from keras_vae.exporting.onnx_convert import finish_onnx, onnx_metadata, to_onnx
from keras_vae.exporting.parity import measure
from keras_vae.exporting.quantize import to_fp16, to_int8
from keras_vae.exporting.runners import onnx_runner, saved_model_runner


# --------------------------------------------------------------------------- the export
def export(vae, out_dir, formats=DEFAULT_FORMATS, opset=17, overwrite=False, data=None,
           name=None, seed=0, verbose=False, source=None, ort_web=None):
    """Exports the encoder and the decoder of `vae`, checks each artifact against Keras, and
    writes `manifest.json`.

    Args:
        vae: a `keras_vae.VAE` (any posterior, likelihood, architecture; mixed-precision models
            export float32 graphs), or a fitted `keras_vae.VAEDetector`: its first model, with
            its threshold and score settings in manifest["anomaly"]
            (`keras_vae.exporting.anomaly`), as for a run directory holding detector.json.
        out_dir: the folder to create. It must not exist or be empty unless `overwrite`; the
            export is written to a temporary sibling folder and moved into place at the end,
            so a failure leaves `out_dir` as it was.
        formats: any of `FORMATS` ("saved_model", "onnx", "onnx_fp16", "onnx_int8", "tflite",
            "tflite_int8"), or the aliases "edge" and "all". An explicit list is strict (any
            variant over its budget fails the export); with "all" or "edge" every variant that
            meets its budget is written and the others are listed in manifest["refused"] with
            the measured error and the budget (fp32 artifacts are always strict). "web" adds
            the fp32 ONNX files and a web page that runs them (`keras_vae.web`).
        opset: ONNX opset, 13 to 18.
        overwrite: replace a previous export in `out_dir`: only a folder whose manifest.json
            marks it as an export and that holds no file the manifest does not list.
        data: optional array (n, *input_shape) of representative inputs: parity and error
            budgets are measured on them and int8 variants calibrated on them. Without it the
            model's own samples are used (fine for parity; a trained model's samples are
            realistic inputs, an untrained model's are noise).
        name: model name written into the metadata (default: `vae.name`).
        seed: seed of the input draws, so the manifest's numbers are reproducible.
        verbose: print one line per artifact with its size and measured error.
        ort_web: with "web": onnxruntime-web's dist folder (see `keras_vae.web.find_ort_web`).
        source: where `vae` came from, for the card and the overwrite check:
            {"kind": "zoo", "name": ...}, {"kind": "run", "path": ...} or
            {"kind": "keras_file", "path": ...}; `out_dir` may not be or contain that path.

    The folder is a self-contained bundle (layout: `keras_vae.exporting.bundle`): the graphs,
    manifest.json (the I/O contract, `keras_vae.exporting.contract`), README.md (the model
    card) and vae_runtime.py (the TF-free runtime). An autoregressive decoder (PixelVAE) is
    exported as the graph (z, x) -> x_logits in the formats `AUTOREGRESSIVE_FORMATS`; the
    runtime draws images from it pixel by pixel.

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

    from keras_vae.version import __version__

    vae, anomaly_section = anomaly.unwrap(vae)
    if getattr(vae, "export_unsupported", None):  # a model the bundle cannot describe
        raise ValueError(vae.export_unsupported)
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"Exporting needs the TensorFlow backend (Keras runs on {keras.backend.backend()!r}): "
            "save the model (vae.save('m.keras')) and run the export with "
            "KERAS_BACKEND=tensorflow; the weights load there unchanged.")
    lenient = any(f in ("all", "edge") for f in ((formats,) if isinstance(formats, str)
                                                  else formats))
    formats, web_dist = web_app.plan(vae, formats, ort_web)
    formats = normalize_formats(formats)
    refused = []
    autoregressive = bool(getattr(vae, "autoregressive", False))
    if autoregressive:
        unsupported = [f for f in formats if f not in AUTOREGRESSIVE_FORMATS]
        reason = ("not built for autoregressive decoders (two inputs (z, x)); formats for them: "
                  + ", ".join(AUTOREGRESSIVE_FORMATS))
        if unsupported and not lenient:
            raise ExportError(f"Formats {', '.join(unsupported)} are {reason}. Leave them out "
                              "of formats, or pass formats='all' to export every format that "
                              "works.", fmt=unsupported[0])
        refused += [{"path": artifact_path(f, c), "component": c, "format": f,
                     "reason": reason} for f in unsupported for c in COMPONENTS]
        formats = [f for f in formats if f in AUTOREGRESSIVE_FORMATS]
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be an integer from {MIN_OPSET} to {MAX_OPSET} (tf2onnx "
                         f"1.17 refuses higher ones), got {opset!r}; the default is 17.")
    source = dict(source or {})
    if anomaly_section is None and source.get("kind") == "run" and source.get("path"):
        anomaly_section = anomaly.from_run(source["path"])
    protected = [source["path"]] if source.get("path") else []
    out = check_out_dir(out_dir, overwrite, protected)
    name = name or vae.name
    started = time.perf_counter()
    graphs = Graphs(vae)
    inputs = check_inputs(vae, graphs, data, seed)
    contract = model_contract(vae)

    def log(message):
        if verbose:
            print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)

    out.parent.mkdir(parents=True, exist_ok=True)
    for path in clean_leftovers(out):
        log(f"removed {path}, left by an export that was killed")
    tmp = make_temp_dir(f".{out.name}.partial-", out.parent)
    scratch = make_temp_dir(SCRATCH_PREFIX)
    artifacts = []
    try:
        for component in COMPONENTS:
            input_names = graphs.input_names[component]
            input_name = input_names[0]
            eval_inputs, calibration = inputs[component]
            built = {}  # fmt -> (relative path, run function, extra manifest fields)

            def refuse(fmt, rel, reason, measured=None):
                if not lenient or PRECISION[fmt] == "fp32" and measured is not None:
                    return False  # strict: the caller raises
                target = tmp / rel
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
                entry = {"path": rel, "component": component, "format": fmt, "reason": reason}
                if measured is not None:
                    entry.update({k: measured[k] for k in (
                        "scaled_max_abs_diff", "scaled_mean_abs_diff", "max_abs_diff",
                        "mean_abs_diff", "budget")})
                refused.append(entry)
                log(f"{rel:22s} refused: {reason}")
                return True

            needs_saved_model = any(f in formats for f in ("saved_model", "tflite",
                                                            "tflite_int8"))
            if needs_saved_model:
                sm_dir = (tmp / artifact_path("saved_model", component) if "saved_model"
                          in formats else scratch / component)
                sm_dir.parent.mkdir(parents=True, exist_ok=True)
                write_saved_model(graphs, component, sm_dir)
                if "saved_model" in formats:
                    built["saved_model"] = (artifact_path("saved_model", component),
                                            saved_model_runner(sm_dir, input_name), {
                                                "serving": {
                                                    "model_base_path": Path(artifact_path(
                                                        "saved_model", component)).parent
                                                    .as_posix(),
                                                    "version": 1,
                                                    "signature": "serving_default",
                                                    "order": POSITIONAL_ORDER["saved_model"]}})
            onnx_fp32 = None
            if any(f.startswith("onnx") for f in formats):
                onnx_fp32 = to_onnx(graphs, component, opset)
            for fmt in ("onnx", "onnx_fp16", "onnx_int8"):
                if fmt not in formats:
                    continue
                extra = {}
                rel = artifact_path(fmt, component)
                try:
                    if fmt == "onnx":
                        model = onnx_fp32
                    elif fmt == "onnx_fp16":
                        model = to_fp16(onnx_fp32)
                    else:
                        model, method = to_int8(onnx_fp32, input_name, calibration,
                                                scratch / f"{component}_int8")
                        extra["quantization"] = method
                    metadata = onnx_metadata(vae, name, component, PRECISION[fmt], opset)
                    metadata.update({
                        "signature": json.dumps({"input": input_name,
                                                 "inputs": list(input_names),
                                                 "outputs": list(graphs.output_names[component])}),
                        "autoregressive": "true" if autoregressive else "false",
                        "contract": json.dumps({**{k: v for k, v in contract.items()
                                                   if k not in COMPONENTS},
                                                **contract[component]})})
                    model = finish_onnx(model, metadata, graphs.output_names[component],
                                        input_order=input_names,
                                        doc_string=doc_string(name, component, PRECISION[fmt],
                                                              contract))
                except ExportError as err:
                    if refuse(fmt, rel, str(err)):
                        continue
                    raise
                onnx.save(model, tmp / rel)
                built[fmt] = (rel, onnx_runner(tmp / rel), extra)
            for fmt in ("tflite", "tflite_int8"):
                if fmt not in formats:
                    continue
                calib = calibration if fmt == "tflite_int8" else None
                rel = artifact_path(fmt, component)
                try:
                    content = order_tflite_io(to_tflite(sm_dir, input_name, calib),
                                              input_names, graphs.output_names[component])
                except ExportError as err:
                    if refuse(fmt, rel, str(err)):
                        continue
                    raise
                (tmp / rel).write_bytes(content)
                extra = {"operators": tflite_op_names(tmp / rel)}
                if calib is not None:
                    extra["quantization"] = ("full integer where LiteRT has int8 kernels "
                                             f"(calibrated on {len(calib)} inputs), float "
                                             "elsewhere; float32 I/O")
                built[fmt] = (rel, tflite_runner(tmp / rel, input_name), extra)

            for fmt in formats:
                if fmt not in built:
                    continue
                rel, run, extra = built[fmt]
                files = file_entries(tmp, rel)
                try:
                    measured = measure(graphs, component, fmt, run, eval_inputs,
                                       data_given=data is not None)
                except ExportError as err:
                    if err.measured is not None and refuse(
                            fmt, rel, f"over its error budget: {err.measured['over_budget']}",
                            err.measured):
                        continue
                    raise
                entry = {"path": rel, "component": component, "format": fmt,
                         "precision": PRECISION[fmt],
                         "size_bytes": sum(f["size_bytes"] for f in files), "files": files,
                         "inputs": contract[component]["inputs"],
                         "outputs": contract[component]["outputs"],
                         **extra, **measured}
                artifacts.append(entry)
                log(f"{rel:22s} {entry['size_bytes'] / 1024:9.1f} KiB   max |diff| "
                    f"{measured['max_abs_diff']:.2e}  mean {measured['mean_abs_diff']:.2e}")
        if not artifacts:
            raise ExportError("No artifact met its error budget: "
                              + "; ".join(f"{r['path']}: {r['reason']}" for r in refused))

        manifest = {
            "manifest_version": 2,
            "written_by": MARKER,
            "model_name": name,
            "keras_vae_version": __version__,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "latent_dim": vae.latent_dim,
            "input_shape": list(vae.input_shape_),
            "likelihood": vae.likelihood,
            "posterior": vae.posterior,
            "autoregressive": autoregressive,
            "source": source or {"kind": "python"},
            "opset": opset if any(f.startswith("onnx") for f in formats) else None,
            "signatures": {
                c: {"input": graphs.input_names[c][0], "inputs": list(graphs.input_names[c]),
                    "outputs": list(graphs.output_names[c])}
                for c in COMPONENTS},
            "contract": contract,
            "check_inputs": inputs["source"],
            "error_rule": ("per output, |export - keras| / max(1, max |keras|); fails the "
                           "export above the artifact's budget"),
            "artifacts": artifacts,
            "refused": refused,
            "formats_requested": "all that meet their budgets" if lenient else "strict",
        }
        if prior_entry(vae) is not None:  # a learned prior (standard bundles stay as they were)
            manifest["prior"] = prior_entry(vae)
        if anomaly_section is not None:
            manifest["anomaly"] = anomaly_section
        description, numbers = source_numbers(source)
        shutil.copyfile(runtime_source(), tmp / RUNTIME_NAME)
        (tmp / CARD_NAME).write_text(card(manifest, description, numbers))
        if web_dist is not None:
            manifest["web"] = web_app.write_web_app(vae, tmp, name=name, ort_web=web_dist,
                                                    seed=seed, manifest=manifest,
                                                    card={**(numbers or {}), **(
                                                        {"description": description}
                                                        if description else {})})
        manifest["bundle"] = {
            "layout": BUNDLE_LAYOUT,
            "files": [e for rel in (RUNTIME_NAME, CARD_NAME) for e in file_entries(tmp, rel)]}
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        (tmp / HOLDER_FILE).unlink()
        move_into_place(tmp, out)
        log(f"wrote {out}")
        return manifest
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
