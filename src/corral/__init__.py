"""Corral: queue, place, launch and keep machine-learning jobs on your own machines.

The SDK entry point is :class:`corral.Client`; it is imported lazily so that
``import corral`` stays light for code running inside a job.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from corral.client.client import Client

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from corral.client.client import Client

        return Client
    raise AttributeError(name)
