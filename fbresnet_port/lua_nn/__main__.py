"""``python -m fbresnet_port.lua_nn``: print the Markdown table of the Lua classes the converter supports."""
from . import supported_classes_markdown

if __name__ == "__main__":
    print(supported_classes_markdown())
