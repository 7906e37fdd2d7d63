"""The local backend: virtual nodes that are slices of this machine."""

from corral.backends.local.backend import LocalBackend

__all__ = ["LocalBackend"]
