"""rational-icl: why transformers learn one in-context-learning strategy rather than another."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rational-icl")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
