"""The bundle: what an export folder holds besides the graphs, which folders `--overwrite` may
replace, and the cleanup of what a killed export left behind.

Bundle layout (the one place it is defined; anything that adds a file to a bundle lists it in
`manifest["bundle"]["files"]` with its sha256, so `--overwrite` may later replace it):

    manifest.json                   the contract (keras_vae.exporting.contract) and every file's
                                    sha256; "written_by": "keras-vae export" marks the folder
    README.md                       the model card: what the model is, its measured numbers,
                                    how to run it, the I/O contract
    vae_runtime.py                  the TF-free runtime (numpy + onnxruntime), a copy of
                                    keras_vae_runtime/runtime.py
    encoder.onnx, decoder.onnx      ONNX fp32 (and .fp16/.int8 variants)
    encoder.tflite, ...             LiteRT variants
    saved_model/encoder/1/          SavedModels in TF Serving's layout: <base>/<version>/
    saved_model/decoder/1/          (point TF Serving's --model_base_path at saved_model/encoder)

Temporary folders while exporting (removed at the end; a killed export's are removed by the
next export once their holder process is gone):

    <parent of OUT>/.<OUT>.partial-*   the bundle being written, renamed to OUT when complete
    <parent of OUT>/.<OUT>.old-*       the previous bundle while --overwrite swaps it out
    $TMPDIR/keras-vae-export-*         scratch (quantization work files, unused SavedModels)

Each holds `HOLDER_FILE` with the pid, host and start time of the process that made it.
"""

import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

MARKER = "keras-vae export"  # manifest["written_by"]
HOLDER_FILE = ".keras-vae-holder.json"
SCRATCH_PREFIX = "keras-vae-export-"
RUNTIME_NAME = "vae_runtime.py"
CARD_NAME = "README.md"
MANIFEST_NAME = "manifest.json"
# The layout, as manifest["bundle"]["layout"] records it.
BUNDLE_LAYOUT = {
    MANIFEST_NAME: "the contract and every file's sha256 (written_by: keras-vae export)",
    CARD_NAME: "model card: what the model is, measured numbers, how to run it, I/O contract",
    RUNTIME_NAME: "TF-free runtime (numpy + onnxruntime): python vae_runtime.py info .",
    "*.onnx": "ONNX graphs: encoder, decoder (fp32), .fp16 / .int8 variants",
    "*.tflite": "LiteRT graphs (fp32, .int8)",
    "saved_model/<component>/1/": "SavedModels in TF Serving's <model_base_path>/<version>/ "
                                  "layout",
}


# --------------------------------------------------------------------------- holders
def _process_start(pid):
    """Start time of process `pid` in seconds since the epoch (Linux /proc), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in
                    Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def make_temp_dir(prefix, parent=None):
    """A new private folder holding HOLDER_FILE (this process's pid, host, start time)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    (path / HOLDER_FILE).write_text(json.dumps({
        "pid": os.getpid(), "host": socket.gethostname(), "created": time.time()}))
    return path


def _holder_gone(path):
    """True when the process that made `path` is dead (or its pid now belongs to a process
    started after the folder was made). Folders without a readable holder file are kept."""
    try:
        holder = json.loads((path / HOLDER_FILE).read_text())
        pid, host, created = int(holder["pid"]), holder["host"], float(holder["created"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname():
        return False  # a shared folder: another machine's process cannot be checked
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    started = _process_start(pid)
    return started is not None and started > created + 1.0  # the pid was reused


def clean_leftovers(out):
    """Removes the temporary folders of killed exports: `.OUT.partial-*` / `.OUT.old-*` next to
    `out` and `keras-vae-export-*` in the temp folder, whose holder process is gone. Returns
    the removed paths."""
    out = Path(out)
    candidates = []
    if out.parent.is_dir():
        candidates += [p for p in out.parent.glob(f".{out.name}.partial-*")]
        candidates += [p for p in out.parent.glob(f".{out.name}.old-*")]
    candidates += list(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"))
    removed = []
    for path in candidates:
        if path.is_dir() and not path.is_symlink() and _holder_gone(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


# --------------------------------------------------------------------------- overwrite safety
def _inside(path, folder):
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def listed_files(manifest):
    """Every path a manifest says its export wrote (artifacts' files, bundle files)."""
    paths = {MANIFEST_NAME}
    for artifact in manifest.get("artifacts", []):
        paths.update(f["path"] for f in artifact.get("files", []))
    paths.update(f["path"] for f in manifest.get("bundle", {}).get("files", []))
    paths.update(f["path"] for f in manifest.get("web", {}).get("files", []))
    return paths


def check_out_dir(out_dir, overwrite, protected=()):
    """The output folder, after refusing anything an export may not write or replace.

    `protected`: paths the export reads (its source run directory or .keras file); `out` may not
    be one of them or contain one. An existing non-empty `out` is replaced only with `overwrite`
    and only when its manifest.json marks it as an export and it holds no file the manifest
    does not list.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is a file; choose another output directory.")
    resolved = out.resolve()
    for source in protected:
        source = Path(source).resolve()
        if resolved == source or _inside(source, resolved):
            raise FileExistsError(
                f"--out {out} {'is' if resolved == source else 'contains'} the model being "
                f"exported ({source}); the export never replaces its source. Choose another "
                "output directory, e.g. a sibling folder.")
    if not out.is_dir() or not any(out.iterdir()):
        return out
    if not overwrite:
        raise FileExistsError(
            f"{out} is not empty; pass overwrite=True (keras-vae export --overwrite) to replace "
            "a previous export there, or choose another output directory.")
    manifest_path = out / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text())
        ok = isinstance(manifest, dict) and (manifest.get("written_by") == MARKER or (
            manifest.get("manifest_version") == 1 and "artifacts" in manifest))
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise FileExistsError(
            f"{out} is not a folder written by keras-vae export (no manifest.json marking it "
            "as one); --overwrite only replaces previous exports. Choose another output "
            "directory.")
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*")
               if p.is_file() or p.is_symlink()}
    foreign = sorted(p for p in on_disk - listed_files(manifest)
                     if not p.split("/")[-1] == HOLDER_FILE)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                          else "")
        raise FileExistsError(
            f"{out} holds files the previous export did not write ({shown}); --overwrite would "
            "delete them. Move them out, or choose another output directory.")
    return out


# --------------------------------------------------------------------------- bundle files
def runtime_source():
    """The runtime file copied into every bundle (keras_vae_runtime/runtime.py)."""
    import keras_vae_runtime.runtime as runtime

    return Path(runtime.__file__)


def _fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def _cell(text):
    return str(text).replace("|", "\\|")


def _tensor_rows(tensors):
    return "\n".join(
        f"| {t['index']} | `{t['name']}` | {t['dtype']} | ({', '.join(map(str, t['shape']))}) | "
        f"{_cell(t['layout'])} | {_cell(t['meaning'])} |" for t in tensors)


def card(manifest, description=None, numbers=None):
    """The bundle's README.md (model card) as text."""
    contract = manifest["contract"]
    name = manifest["model_name"]
    lines = [f"# {name}", ""]
    lines.append(description or f"A keras-vae variational autoencoder ({manifest['likelihood']} "
                                f"likelihood, {manifest['posterior']} posterior, "
                                f"{manifest['latent_dim']} latents).")
    lines += ["", f"Exported by keras-vae {manifest['keras_vae_version']} on "
                  f"{manifest['created_utc']}. Input shape {tuple(manifest['input_shape'])}, "
                  f"latent dimension {manifest['latent_dim']}.", ""]
    if numbers:
        lines += ["## Measured", "", "| quantity | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in numbers.items()]
        lines.append("")
    lines += ["## Files", "", "| file | format | precision | size | max diff vs Keras (scaled) |",
              "|---|---|---|---|---|"]
    for a in manifest["artifacts"]:
        lines.append(f"| `{a['path']}` | {a['format']} | {a['precision']} | "
                     f"{a['size_bytes'] / 1024:.0f} KiB | {a['scaled_max_abs_diff']:.1e} |")
    for r in manifest.get("refused", []):
        lines.append(f"| ~~`{r['path']}`~~ refused | {r['format']} | - | - | "
                     f"{_cell(r['reason'])} |")
    lines += ["", "## Run it (numpy + onnxruntime only)", "", "```bash",
              "pip install numpy onnxruntime     # Pillow only to read image files",
              "python vae_runtime.py info .",
              "python vae_runtime.py sample . --n 64 --seed 0 --out samples.png",
              "python vae_runtime.py encode . --x images.npy --out z_mean.npy",
              "python vae_runtime.py score  . --x images.npy --out scores.npy   # -ELBO, nats",
              *(["python vae_runtime.py score  . --data rows.csv --out scores.csv "
                 "# row, score, flag"] if manifest.get("anomaly") else []),
              "```", "",
              "`vae_runtime.py` checks every file against the sha256 sums in `manifest.json` "
              "before use. SavedModels are in TF Serving's layout: "
              "`tensorflow_model_server --model_name=encoder "
              "--model_base_path=$PWD/saved_model/encoder`.", "",
              "## I/O contract", "",
              "Every format gives inputs and outputs by index in this order (SavedModel "
              "signatures are keyed by name). All tensors are float32; `batch` is dynamic.", ""]
    for component in ("encoder", "decoder"):
        part = contract[component]
        lines += [f"**{component}**", "", "| | name | dtype | shape | layout | meaning |",
                  "|---|---|---|---|---|---|", "| **inputs** | | | | | |",
                  _tensor_rows(part["inputs"]), "| **outputs** | | | | | |",
                  _tensor_rows(part["outputs"]), ""]
    x_in = contract["encoder"]["inputs"][0]
    lines += [f"- Input domain: {x_in['domain']}. Preprocessing: {x_in['preprocessing']}.",
              f"- Prior: {contract['prior']}.",
              f"- Sampling (outside the graphs): `{contract['sampling']['formula']}`.",
              f"- Likelihood: `{contract['likelihood']['log_p_x_given_z']}`."]
    if "sampling" in contract["likelihood"]:
        lines.append(f"- Drawing x: {contract['likelihood']['sampling']}.")
    lines += [f"- {contract['kl']}.",
              f"- Score: {contract['score']['name']}: {contract['score']['formula']}."]
    anomaly = manifest.get("anomaly")
    if anomaly:
        threshold = anomaly.get("threshold")
        lines += [f"- Anomaly flags: {anomaly['flag_rule']}, threshold "
                  + (f"{threshold:.6g} (flags a share {anomaly['contamination']:g} of the "
                     "training rows; `--contamination` refits it, `--threshold` sets it)"
                     if threshold is not None else f"none ({anomaly.get('note')})")
                  + f". Score: {anomaly['formula']}; noise: {anomaly['noise']}."]
    lines += ["", "The machine-readable form of all of this is `manifest.json` (\"contract\""
              + (", \"anomaly\"" if anomaly else "") + ").", ""]
    return "\n".join(lines)


def source_numbers(source):
    """(description, {quantity: value}) for the card, from the zoo registry or a run's
    summary.json; (None, None) when nothing was measured."""
    if not source:
        return None, None
    if source.get("kind") in ("zoo", "preset") and source.get("name"):
        from keras_vae.zoo.registry import REGISTRY

        entry = REGISTRY.get(source["name"], {})
        results = entry.get("results", {})
        numbers = {}
        if results.get("test_nll") is not None:
            numbers[f"test NLL, nats (k={results.get('nll_samples')}, "
                    f"{results.get('nll_examples')} test images)"] = (
                f"{_fmt(results['test_nll'])} +- {_fmt(results.get('test_nll_stderr'))}")
        if results.get("test_neg_elbo") is not None:
            numbers["test -ELBO, nats"] = (f"{_fmt(results['test_neg_elbo'])} +- "
                                           f"{_fmt(results.get('test_neg_elbo_stderr'))}")
        for key in ("test_reconstruction", "test_kl"):
            if results.get(key) is not None:
                numbers[key.replace("_", " ") + ", nats"] = _fmt(results[key])
        if entry.get("parameters"):
            numbers["parameters"] = f"{entry['parameters']:,}"
        if entry.get("training", {}).get("epochs"):
            numbers["epochs trained"] = str(entry["training"]["epochs"])
        desc = entry.get("description")
        if desc:
            desc += (f". Zoo model `{source['name']}`; data: {entry.get('data_license')}; "
                     f"weights license {entry.get('license')}.")
        return desc, numbers or None
    if source.get("kind") == "run":
        try:
            summary = json.loads((Path(source["path"]) / "summary.json").read_text())
        except (OSError, ValueError):
            return None, None
        test = summary.get("test", {}) if isinstance(summary, dict) else {}
        numbers = {f"test {k}": (f"{v:.3f}" if isinstance(v, float) else str(v))
                   for k, v in test.items() if isinstance(v, (int, float))}
        if isinstance(summary, dict) and summary.get("epochs_trained") is not None:
            numbers["epochs trained"] = str(summary["epochs_trained"])
        return None, numbers or None
    return None, None
