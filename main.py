"""Train and test ResNets and DenseNets, as ``th main.lua``: ``python main.py -h`` lists the flags.

The code is :mod:`fbresnet_port.main` (installed as the ``fbresnet-train`` command).
"""
import sys

from fbresnet_port.main import main, run  # noqa: F401  (tests and scripts call main.main / main.run)

if __name__ == "__main__":
    sys.exit(main())
