#!/usr/bin/env python3
"""Port of fb.resnet.torch pretrained/extract-features.lua: the features before the classifier, saved to features.t7.

Runs from any folder; see `python pretrained/extract-features.py --help` and fbresnet_port/pretrained.py.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from fbresnet_port.pretrained import extract_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(extract_main(prog=os.path.basename(sys.argv[0])))
