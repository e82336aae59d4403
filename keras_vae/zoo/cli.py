"""The `keras-vae zoo` commands: list, info, download, build."""

import json
import pprint
import sys
from pathlib import Path

from keras_vae.zoo import registry
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
        path = download(name, base_url=args.base_url, offline=args.offline or None)
        print(f"{name}\t{path}")
    return 0


def _cmd_build(args):
    entry = build(args.name, data=args.data, out=args.out, overwrite=args.overwrite,
                  max_epochs=args.max_epochs, patience=args.patience,
                  time_limit=args.time_limit, nll_samples=args.nll_samples,
                  nll_examples=args.nll_examples)
    print(f"Wrote {Path(args.out) / entry['file']}. Registry entry (paste into "
          "keras_vae/zoo.py _RELEASED):", file=sys.stderr)
    measured = {k: entry[k] for k in ("sha256", "size_bytes", "parameters", "training",
                                      "results")}
    print(pprint.pformat({args.name: measured}, sort_dicts=False, width=100))
    return 0


def add_commands(subparsers):
    """Adds `zoo list|info|download|build` to the `keras-vae` command line."""
    zoo = subparsers.add_parser("zoo", help="pretrained models: list, info, download, build",
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
                        "else the release tag on GitHub)")
    p.add_argument("--offline", action="store_true",
                   help=f"never use the network (like {OFFLINE_ENV}=1)")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("build", help="train a recipe reproducibly, measure it, write its file",
                       description="Trains the registry's recipe NAME (fixed seed, "
                       "deterministic ops, early stopping on the validation split), measures "
                       "test -ELBO and importance-weighted test NLL, writes OUT/NAME.weights.h5 "
                       "and prints the registry entry.")
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
    p.set_defaults(func=_cmd_build)
