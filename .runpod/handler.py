"""The RunPod Hub looks for a handler.py. The image itself runs `python3 -m worker runpod`
(see the Dockerfile); this file runs the same worker for anyone who starts it directly."""

import os
import sys

from worker.platforms.runpod_handler import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], dict(os.environ)))
