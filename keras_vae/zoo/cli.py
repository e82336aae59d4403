"""The `keras-vae zoo` commands: list, info, download, build, push, export."""

import json
import os
import shlex
import sys
from pathlib import Path

from keras_vae.zoo import preset, registry
from keras_vae.zoo.builder import build
from keras_vae.zoo.downloader import OFFLINE_ENV, URL_ENV, download, info
from keras_vae.zoo.registry import released_names, table


def _cmd_list(args):
    if args.json:
        print(json.dumps(registry.list(include_unreleased=args.all), indent=2))
    else:
        print(table(markdown=args.markdown))
        if not args.markdown:
            print("\nNLL and -ELBO in nats per test example (lower is better); the NLL uses k "
                  "importance samples on the listed test examples, compare it with the -ELBO "
                  "of those.")
    return 0


def _cmd_info(args):
    print(json.dumps(info(args.name), indent=2))
    return 0


def _cmd_download(args):
    names = args.names or released_names()
    for name in names:
        try:
            path = download(name, base_url=args.base_url, offline=args.offline or None)
        except KeyboardInterrupt:  # Ctrl-C: the partial file is already gone
            print(f"keras-vae zoo: error: interrupted while fetching {name!r}; nothing was "
                  "kept in the cache. Run the command again to fetch it.", file=sys.stderr)
            return 130
        print(f"{name}\t{path}")
    return 0


def portable_command(command):
    """A recorded command without machine paths: an absolute path or one under the home
    folder becomes ../shared/datasets/FILE when it is a file of the shared data sets, else
    PATH."""
    words = shlex.split(command)
    home = os.path.expanduser("~")
    for i, word in enumerate(words):
        if os.path.isabs(word) or (home not in ("", "/") and word.startswith(home)):
            parts = Path(word).parts
            if "shared" in parts and parts.index("shared") + 1 < len(parts):
                words[i] = "../" + "/".join(parts[parts.index("shared"):])
            else:
                words[i] = "PATH"
    return shlex.join(words)


def record_build(name, entry, weights, registry_dir=registry.PRESETS_DIR):
    """Writes a finished build into the registry: `registry_dir/NAME/preset.json` (and, for a
    packaged preset, its whole folder), atomically; returns the path of preset.json."""
    recipe = dict(registry.REGISTRY.get(name) or registry.get_entry(name, released=False))
    measured = {k: entry[k] for k in ("sha256", "size_bytes", "parameters", "training",
                                      "results")}
    measured["training"] = dict(measured["training"],
                                command=portable_command(measured["training"]["command"]))
    recipe.update(measured, name=name)
    recipe.setdefault("handle", preset.default_handle(name))
    folder = Path(registry_dir) / name
    if (folder / preset.WEIGHTS_FILE).is_file():  # a packaged preset: refresh its files too
        written = preset.write_preset(recipe, weights, folder, overwrite=True)
    else:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="keras-vae-preset-") as tmp:
            written = preset.write_preset(recipe, weights, Path(tmp) / name)
        registry.write_entry(written, registry_dir)
    registry.REGISTRY[name] = written
    return folder / registry.PRESET_FILE


def _cmd_build(args):
    entry = build(args.name, data=args.data, out=args.out, overwrite=args.overwrite,
                  max_epochs=args.max_epochs, patience=args.patience,
                  time_limit=args.time_limit, nll_samples=args.nll_samples,
                  nll_examples=args.nll_examples)
    weights = Path(args.out) / entry["file"]
    path = record_build(args.name, entry, weights, registry_dir=args.registry)
    print(f"Wrote {weights} and the registry entry {path}.", file=sys.stderr)
    print(json.dumps({k: entry[k] for k in ("sha256", "size_bytes", "parameters", "results")},
                     indent=2))
    return 0


def _cmd_push(args):
    handle, url = preset.push(args.source, args.to, message=args.message,
                              base_url=args.base_url)
    print(f"{args.source}\t{handle}\t{url}")
    return 0


def _cmd_export(args):
    entry = preset.export_preset(args.name, args.out, base_url=args.base_url,
                                 overwrite=args.overwrite)
    print(f"{args.name}\t{Path(args.out)}\t{len(entry['files']) + 1} files")
    return 0


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
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="the registry entry of one model, and its cache status")
    p.add_argument("name")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("download", help="fetch and verify weight files into the Keras cache")
    p.add_argument("names", nargs="*", metavar="NAME", help="models (default: all released)")
    p.add_argument("--base-url", default=None,
                   help=f"URL, file:// URL or folder of the weight files (default ${URL_ENV}, "
                        "else the packaged presets, the checkout's weights/, or the Hub)")
    p.add_argument("--offline", action="store_true",
                   help=f"never use the network (like {OFFLINE_ENV}=1)")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("build", help="train a recipe reproducibly, measure it, write its file",
                       description="Trains the registry's recipe NAME (fixed seed, "
                       "deterministic ops, early stopping on the validation split), measures "
                       "test -ELBO and importance-weighted test NLL, writes OUT/NAME.weights.h5 "
                       "and the registry entry (keras_vae/zoo/presets/NAME/preset.json).")
    p.add_argument("name")
    p.add_argument("--data", default=None,
                   help="binarized MNIST .npz (train/valid/test); digits recipes need none")
    p.add_argument("--out", default="weights", help="folder for the weight file (weights)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing weight file")
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds of training after which to stop at the end of an epoch")
    p.add_argument("--nll-samples", type=int, default=None,
                   help="k of the importance-weighted test NLL (recipe default 5000; 0 skips)")
    p.add_argument("--nll-examples", type=int, default=None,
                   help="measure the NLL on N evenly spaced test examples only (every "
                        "(test size // N)-th), to fit a time budget")
    p.add_argument("--registry", default=str(registry.PRESETS_DIR),
                   help="folder of the registry's preset.json files (default: the package's)")
    p.set_defaults(func=_cmd_build)

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
    p.set_defaults(func=_cmd_push)

    p = sub.add_parser("export", help="write a zoo model's preset folder",
                       description="Writes the preset folder of a zoo model: a Keras model "
                       "folder (keras.saving.load_model reads it) plus preset.json and the "
                       "model card.")
    p.add_argument("name")
    p.add_argument("--out", required=True, help="the folder to create")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the preset files of an existing preset folder")
    p.add_argument("--base-url", default=None, help="where the weights come from")
    p.set_defaults(func=_cmd_export)
