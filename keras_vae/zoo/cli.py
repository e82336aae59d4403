"""The `keras-vae zoo` commands: list, info, download, build."""

import json
import os
import pprint
import sys
from pathlib import Path

from keras_vae.zoo import registry
from keras_vae.zoo.builder import build
from keras_vae.zoo.downloader import download, info
from keras_vae.zoo.registry import released_names, table


def cmd_list(args):
    if args.json:
        print(json.dumps(registry.list(include_unreleased=args.all), indent=2))
    else:
        print(table(markdown=args.markdown))
        if not args.markdown:
            print("\nNLL and -ELBO in nats per test example (lower is better); the NLL uses k "
                  "importance samples on the listed test examples, compare it with the -ELBO "
                  "of those.")
    return 0


def cmd_info(args):
    print(json.dumps(info(args.name), indent=2))
    return 0


def cmd_download(args):
    names = args.names or released_names()
    for name in names:
        path = download(name, base_url=args.base_url, offline=args.offline or None)
        print(f"{name}\t{path}")
    return 0


def cmd_build(args):
    entry = build(args.name, data=args.data, out=args.out, overwrite=args.overwrite,
                  max_epochs=args.max_epochs, patience=args.patience,
                  time_limit=args.time_limit, nll_samples=args.nll_samples,
                  nll_examples=args.nll_examples,
                  run_dir=args.run_dir or os.path.join("runs", "zoo", args.name))
    print(f"Wrote {Path(args.out) / entry['file']}. Registry entry (paste into "
          "keras_vae/zoo.py _RELEASED):", file=sys.stderr)
    measured = {k: entry[k] for k in ("sha256", "size_bytes", "parameters", "training",
                                      "results")}
    print(pprint.pformat({args.name: measured}, sort_dicts=False, width=100))
    return 0
