"""``python -m fbresnet_port.lua_nn [--compact]``: print the Markdown table of the Lua classes the converter supports
(``--compact``: one row per family, as in the README)."""
import sys

from . import supported_classes_markdown

if __name__ == "__main__":
    print(supported_classes_markdown(compact="--compact" in sys.argv[1:]))
