"""`keras-vae export`."""

from pathlib import Path

import numpy as np

from keras_vae.exporting.api import export
from keras_vae.exporting.formats import DEFAULT_FORMATS, FORMATS


# --------------------------------------------------------------------------- command line
def load_vae(path):
    """Loads a VAE from a run directory (which holds `model.keras`) or a `.keras` file."""
    import keras

    from keras_vae.model import VAE

    path = Path(path)
    if path.is_dir():
        model_file = path / "model.keras"
        if not model_file.is_file():
            raise FileNotFoundError(f"{path} has no model.keras; pass a run directory written by "
                                    "`keras-vae train` or a .keras file.")
    elif path.is_file():
        if path.suffix != ".keras":
            raise ValueError(f"{path} is not a .keras file; pass a run directory or a file "
                             "saved with vae.save('name.keras').")
        model_file = path
    else:
        raise FileNotFoundError(f"{path} does not exist; pass a run directory or a .keras file.")
    model = keras.saving.load_model(model_file, compile=False)
    if not isinstance(model, VAE):
        raise ValueError(f"{model_file} holds a {type(model).__name__}, not a keras_vae VAE.")
    return model


def load_array(path, key=None):
    """Inputs from a .npy file or a .npz archive (array `key`, else "test", "valid", "x",
    "train", or its only array), as float32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--data {path} does not exist.")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False).astype("float32")
    if path.suffix != ".npz":
        raise ValueError(f"--data {path}: expected a .npy or .npz file.")
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.keys())
        if key is None:
            key = next((k for k in ("test", "valid", "x", "train") if k in names),
                       names[0] if len(names) == 1 else None)
        if key not in names:
            raise ValueError(f"--data {path} has arrays {names}; choose one with --data-key.")
        return archive[key].astype("float32")


def _run_command(args):
    vae = load_vae(args.model)
    data = load_array(args.data, args.data_key) if args.data else None
    if data is not None and data.ndim >= 2 and tuple(data.shape[1:]) != vae.input_shape_ \
            and int(np.prod(data.shape[1:])) == int(np.prod(vae.input_shape_)):
        data = data.reshape((-1,) + tuple(vae.input_shape_))
    name = args.name or (Path(args.model).name if Path(args.model).is_dir()
                         else Path(args.model).stem)
    manifest = export(vae, args.out, formats=args.formats, opset=args.opset,
                      overwrite=args.overwrite, data=data, name=name, seed=args.seed,
                      verbose=not args.quiet, ort_web=args.ort_web)
    if args.quiet:
        print(args.out)
    return 0 if manifest else 1


def add_commands(subparsers):
    """Adds `keras-vae export`."""
    parser = subparsers.add_parser(
        "export", help="export encoder and decoder to SavedModel, ONNX and edge formats",
        description="Export the encoder and decoder of a trained VAE, check each artifact "
                    "against the Keras model, and write manifest.json. Formats: "
                    + "; ".join(f"{k}: {v}" for k, v in FORMATS.items()))
    parser.add_argument("model", metavar="RUN_DIR_OR_MODEL",
                        help="a run directory holding model.keras, or a .keras file")
    parser.add_argument("--out", required=True, help="output directory (must be new or empty)")
    parser.add_argument("--formats", nargs="+", default=list(DEFAULT_FORMATS),
                        metavar="FORMAT", help=f"any of {', '.join(FORMATS)}, or 'edge' / 'all' "
                                               f"(default: {' '.join(DEFAULT_FORMATS)}); 'web' "
                                               "adds a web page (index.html) running the ONNX "
                                               "files in the browser")
    parser.add_argument("--ort-web", metavar="PATH",
                        help="with --formats web: onnxruntime-web's dist folder (default: "
                             "node_modules/onnxruntime-web in the current folder)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 13-18 (default 17)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the contents of a non-empty --out")
    parser.add_argument("--data", help="a .npy/.npz of representative inputs for the parity "
                                       "checks and int8 calibration (default: model samples)")
    parser.add_argument("--data-key", help="which array of a .npz --data to use")
    parser.add_argument("--name", help="model name for the metadata (default: the run "
                                       "directory's or file's name)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the check inputs")
    parser.add_argument("--quiet", action="store_true", help="print only the output folder")
    parser.set_defaults(func=_run_command)
