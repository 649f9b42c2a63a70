#!/usr/bin/env python3
"""Port of fb.resnet.torch pretrained/classify.lua: the top-5 ImageNet classes of images.

Runs from any folder; see `python pretrained/classify.py --help` and fbresnet_port/pretrained.py.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from fbresnet_port.pretrained import classify_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(classify_main(prog=os.path.basename(sys.argv[0])))
