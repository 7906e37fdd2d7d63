"""The ``corral`` command line, one module per resource group, built on :class:`corral.Client`."""
