"""Arguments of `keras-vae export` (its handler: keras_vae/exporting/cli.py)."""

from keras_vae_cli.constants import DEFAULT_FORMATS, FORMATS


def add_commands(subparsers):
    """Adds `keras-vae export`."""
    parser = subparsers.add_parser(
        "export", help="export encoder and decoder to SavedModel, ONNX and edge formats",
        description="Export the encoder and decoder of a trained VAE as a self-contained "
                    "bundle: every artifact checked against the Keras model, manifest.json "
                    "(the I/O contract), README.md (model card) and vae_runtime.py (runs it "
                    "with numpy + onnxruntime). Formats: "
                    + "; ".join(f"{k}: {v}" for k, v in FORMATS.items()))
    parser.add_argument("model", metavar="SOURCE",
                        help="a run directory holding model.keras, a .keras file, or a zoo "
                             "model name (keras-vae zoo list)")
    parser.add_argument("--out", required=True, help="output directory (must be new or empty)")
    parser.add_argument("--formats", nargs="+", default=list(DEFAULT_FORMATS),
                        metavar="FORMAT", help=f"any of {', '.join(FORMATS)}, or 'edge' / 'all' "
                                               "(every variant that meets its error budget; "
                                               "the others are listed in manifest.json) "
                                               f"(default: {' '.join(DEFAULT_FORMATS)}); "
                                               "'web' adds a web page (index.html) running the "
                                               "ONNX files in the browser")
    parser.add_argument("--ort-web", metavar="PATH",
                        help="with --formats web: onnxruntime-web's dist folder (default: "
                             "node_modules/onnxruntime-web in the current folder)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 13-18 (default 17)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a previous export in --out (never other files, never the "
                             "source)")
    parser.add_argument("--data", help="a .npy/.npz of representative inputs for the parity "
                                       "checks and int8 calibration (default: model samples)")
    parser.add_argument("--data-key", help="which array of a .npz --data to use")
    parser.add_argument("--name", help="model name for the metadata (default: the run "
                                       "directory's or file's name)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the check inputs")
    parser.add_argument("--quiet", action="store_true", help="print only the output folder")
    parser.set_defaults(func="keras_vae.exporting.cli:run_command")
