"""Arguments of `keras-vae zoo list|info|download|build|push|export` (their handlers:
keras_vae/zoo/cli.py)."""

from keras_vae_cli.constants import OFFLINE_ENV, URL_ENV


def add_commands(subparsers):
    """Adds `zoo list|info|download|build|push|export` to the `keras-vae` command line."""
    zoo = subparsers.add_parser("zoo", help="pretrained models: list, info, download, build, "
                                "push, export",
                                description="The model zoo: pretrained VAEs with verified "
                                "downloads (see keras_vae.zoo).")
    sub = zoo.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    zoo.set_defaults(func=lambda args: (zoo.print_help(), 2)[1])

    p = sub.add_parser("list", help="the table of models and their measured quality")
    p.add_argument("--markdown", action="store_true", help="a markdown table (README)")
    p.add_argument("--json", action="store_true", help="JSON rows as zoo.list() returns them")
    p.add_argument("--all", action="store_true", help="with --json: recipes not yet built too")
    p.set_defaults(func="keras_vae.zoo.cli:cmd_list")

    p = sub.add_parser("info", help="the registry entry of one model, and its cache status")
    p.add_argument("name")
    p.set_defaults(func="keras_vae.zoo.cli:cmd_info")

    p = sub.add_parser("download", help="fetch and verify weight files into the Keras cache")
    p.add_argument("names", nargs="*", metavar="NAME", help="models (default: all released)")
    p.add_argument("--base-url", default=None,
                   help=f"URL, file:// URL or folder of the weight files (default ${URL_ENV}, "
                        "else the packaged presets, the checkout's weights/, or the Hub)")
    p.add_argument("--offline", action="store_true",
                   help=f"never use the network (like {OFFLINE_ENV}=1)")
    p.set_defaults(func="keras_vae.zoo.cli:cmd_download")

    p = sub.add_parser("build", help="train a recipe reproducibly, measure it, write its file",
                       description="Trains the registry's recipe NAME (fixed seed, "
                       "deterministic ops, early stopping on the validation split), measures "
                       "test -ELBO and importance-weighted test NLL, writes OUT/NAME.weights.h5 "
                       "and the registry entry (keras_vae/zoo/presets/NAME/preset.json).")
    p.add_argument("name")
    p.add_argument("--data", default=None,
                   help="binarized MNIST .npz (train/valid/test); digits recipes need none")
    p.add_argument("--out", default="weights", help="folder for the weight file (weights)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing weight file and a finished run in --run-dir")
    p.add_argument("--run-dir", default=None,
                   help="the run directory it trains in (default runs/zoo/NAME): TensorBoard "
                        "logs, history, pictures; rerun the same command to resume a killed "
                        "build")
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds of training after which to stop at the end of an epoch")
    p.add_argument("--nll-samples", type=int, default=None,
                   help="k of the importance-weighted test NLL (recipe default 5000; 0 skips)")
    p.add_argument("--nll-examples", type=int, default=None,
                   help="measure the NLL on N evenly spaced test examples only (every "
                        "(test size // N)-th), to fit a time budget")
    p.add_argument("--registry", default=None,
                   help="folder of the registry's preset.json files (default: the package's)")
    p.set_defaults(func="keras_vae.zoo.cli:cmd_build")

    p = sub.add_parser("push", help="upload a preset to the Hugging Face Hub",
                       description="Uploads a preset (config.json, metadata.json, "
                       "model.weights.h5, preset.json, README.md model card) to hf://owner/name; "
                       "the token comes from `hf auth login` or HF_TOKEN.")
    p.add_argument("source", metavar="NAME", help="a zoo model name or a preset folder")
    p.add_argument("--to", required=True, metavar="hf://owner/name",
                   help="the repository (created if missing; @branch optional)")
    p.add_argument("--message", default=None, help="commit message")
    p.add_argument("--base-url", default=None,
                   help="where the zoo model's weights come from (as for download)")
    p.set_defaults(func="keras_vae.zoo.cli:cmd_push")

    p = sub.add_parser("export", help="write a zoo model's preset folder",
                       description="Writes the preset folder of a zoo model: a Keras model "
                       "folder (keras.saving.load_model reads it) plus preset.json and the "
                       "model card.")
    p.add_argument("name")
    p.add_argument("--out", required=True, help="the folder to create")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the preset files of an existing preset folder")
    p.add_argument("--base-url", default=None, help="where the weights come from")
    p.set_defaults(func="keras_vae.zoo.cli:cmd_export")
