"""The ``ricl`` command: thin wrappers over the package."""
