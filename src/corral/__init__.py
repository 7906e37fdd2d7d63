"""Corral: queue, place, launch and keep machine-learning jobs on your own machines.

The SDK entry point is :class:`corral.Client`; it is imported lazily so that
``import corral`` stays light for code running inside a job.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from corral.client.aio import AsyncClient
    from corral.client.client import Client
    from corral.client.jobs import RemoteJob

__all__ = ["AsyncClient", "Client", "RemoteJob", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from corral.client.client import Client

        return Client
    if name == "AsyncClient":
        from corral.client.aio import AsyncClient

        return AsyncClient
    if name == "RemoteJob":
        from corral.client.jobs import RemoteJob

        return RemoteJob
    raise AttributeError(name)
