"""`python -m keras_vae_runtime ...`: the bundle runtime's command line."""

import sys

from keras_vae_runtime.runtime import main

sys.exit(main(prog="keras-vae-runtime"))
