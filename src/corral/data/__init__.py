"""Data: volumes (object stores and shared directories) and the inputs jobs stage in from them."""
