import sys

from keras_vae_cli import main

sys.exit(main())
