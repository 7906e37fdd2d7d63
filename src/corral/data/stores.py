"""A volume as an fsspec file system: S3 through s3fs, Azure Blob Storage through adlfs, a directory as itself.

A :class:`Store` is plain data (a protocol, the file system's options, the volume's root in it), so that the
server can hand it to a node, which opens the same file system there (``corral.data.stage``). Its options hold
the volume's credentials: a Store is never logged, returned by the API or written where users read.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from corral.core.errors import InvalidRequest

#: How long one request to a store may take before it counts as failed (connecting, then reading).
CONNECT_SECONDS = 10
READ_SECONDS = 60


@dataclass(frozen=True)
class Store:
    protocol: str  # "s3", "abfs" or "file"
    options: dict[str, Any]
    #: The volume's root in the file system: ``bucket/prefix``, ``container/prefix`` or a directory.
    root: str

    def open(self) -> Any:
        """The fsspec file system (s3fs and adlfs are imported only here: a server without volumes needs
        neither)."""
        import fsspec

        try:
            return fsspec.filesystem(self.protocol, skip_instance_cache=True, **self.options)
        except ImportError as exc:
            raise InvalidRequest(
                f"volumes of this kind need {exc.name or 'a package'} on the server and nodes: "
                "pip install 'corral[data]'"
            ) from None

    def path(self, relative: str = "") -> str:
        """The full path of ``relative`` (already checked: no ``..``) under the volume's root."""
        relative = relative.strip("/")
        return posixpath.join(self.root, relative) if relative else self.root

    def to_json(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "options": self.options, "root": self.root}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Store:
        return cls(data["protocol"], dict(data["options"]), data["root"])


def store_for(spec: dict[str, Any], credentials: dict[str, Any]) -> Store:
    """The store of a volume: its spec as stored (without credentials) and its credentials."""
    kind = spec["kind"]
    if kind == "s3":
        options: dict[str, Any] = {
            "config_kwargs": {
                "connect_timeout": CONNECT_SECONDS,
                "read_timeout": READ_SECONDS,
                "retries": {"max_attempts": 3},
            }
        }
        if spec.get("endpoint_url"):
            options["endpoint_url"] = spec["endpoint_url"]
        if spec.get("region"):
            options["client_kwargs"] = {"region_name": spec["region"]}
        if credentials:
            options["key"] = credentials["access_key_id"]
            options["secret"] = credentials["secret_access_key"]
            if credentials.get("session_token"):
                options["token"] = credentials["session_token"]
        else:
            options["anon"] = True
        return Store("s3", options, _joined(spec["bucket"], spec.get("prefix", "")))
    if kind == "azureblob":
        endpoint = spec.get("endpoint") or f"https://{spec['account']}.blob.core.windows.net"
        parts = [f"AccountName={spec['account']}", f"BlobEndpoint={endpoint}"]
        if credentials.get("account_key"):
            scheme = endpoint.split("://", 1)[0]
            parts = [f"DefaultEndpointsProtocol={scheme}", *parts, f"AccountKey={credentials['account_key']}"]
        else:
            parts.append(f"SharedAccessSignature={credentials['sas_token'].lstrip('?')}")
        options = {"connection_string": ";".join(parts) + ";"}
        return Store("abfs", options, _joined(spec["container"], spec.get("prefix", "")))
    if kind == "path":
        return Store("file", {}, spec["path"])
    raise ValueError(f"unknown volume kind {kind!r}")


def _joined(first: str, prefix: str) -> str:
    return posixpath.join(first, prefix) if prefix else first


def check(store: Store, kind: str) -> None:
    """Reach the store once (a listing of the volume's bucket or container, or its directory); raise
    ``InvalidRequest`` saying what is wrong: no such bucket, credentials refused, nothing answering."""
    container = store.root.split("/", 1)[0] if store.protocol != "file" else store.root
    what = {"s3": "bucket", "azureblob": "container", "path": "directory"}[kind]
    try:
        fs = store.open()
        if store.protocol == "file":
            if not fs.isdir(container):
                raise FileNotFoundError(container)
            fs.ls(container)
        else:
            fs.ls(container, detail=False)
    except InvalidRequest:
        raise
    except FileNotFoundError:
        raise InvalidRequest(
            f"volume: the {what} {container!r} does not exist (or these credentials cannot see it)"
        ) from None
    except Exception as exc:
        refused = isinstance(exc, PermissionError) or getattr(exc, "status_code", None) in (401, 403)
        if refused:
            raise InvalidRequest(
                f"volume: the {what} {container!r} refused these credentials: {_first_line(exc)}"
            ) from None
        raise InvalidRequest(f"volume: could not reach the {what} {container!r}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
