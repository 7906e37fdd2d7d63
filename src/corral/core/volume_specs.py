"""The spec of a volume (``corral volume create -f volume.yaml``): an S3 bucket, an Azure Blob container, or a
directory every node sees (docs/data.md). Credentials are fields of their own, so that the server can store them
sealed and return the rest."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints, model_validator

from corral.core.specs import Name, Strict, _no_dot_segments, _no_nul

#: A key under a bucket or container: relative, ``/``-separated, no ``.`` or ``..`` segment, no empty one.
StorePrefix = Annotated[
    str,
    BeforeValidator(lambda v: v.strip("/") if isinstance(v, str) else v),
    StringConstraints(pattern=r"^([^/\x00]+(/[^/\x00]+)*)?$", max_length=1024),
    AfterValidator(_no_dot_segments),
]
#: Text kept secret: stored sealed, never in a response or a log.
Credential = Annotated[str, StringConstraints(min_length=1, max_length=4096), AfterValidator(_no_nul)]


class S3Credentials(Strict):
    access_key_id: Credential
    secret_access_key: Credential
    session_token: Credential | None = None


class S3Volume(Strict):
    """A bucket (and a prefix in it) of any S3 API: AWS, MinIO, Ceph, moto."""

    name: Name
    kind: Literal["s3"]
    bucket: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    prefix: StorePrefix = ""
    region: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,32}$")] | None = None
    endpoint_url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=1024)] | None = None
    #: None: anonymous access (a public bucket).
    credentials: S3Credentials | None = None


class AzureBlobCredentials(Strict):
    account_key: Credential | None = None
    sas_token: Credential | None = None

    @model_validator(mode="after")
    def _one(self) -> AzureBlobCredentials:
        if (self.account_key is None) == (self.sas_token is None):
            raise ValueError("give one of account_key or sas_token")
        return self


class AzureBlobVolume(Strict):
    """A container (and a prefix in it) of an Azure storage account, or of Azurite (``endpoint``)."""

    name: Name
    kind: Literal["azureblob"]
    account: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]{3,24}$")]
    container: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")]
    prefix: StorePrefix = ""
    #: The blob service's URL (default ``https://<account>.blob.core.windows.net``).
    endpoint: Annotated[str, StringConstraints(pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=1024)] | None = None
    credentials: AzureBlobCredentials


def _absolute(value: object) -> object:
    if isinstance(value, str) and not value.startswith("/"):
        raise ValueError(f"must be an absolute path, got {value!r}")
    return value


class PathVolume(Strict):
    """A directory every node of a cluster sees at the same path (NFS, Lustre, a directory of this machine)."""

    name: Name
    kind: Literal["path"]
    path: Annotated[
        str,
        StringConstraints(min_length=1, max_length=4096),
        AfterValidator(_no_nul),
        AfterValidator(_absolute),
        AfterValidator(_no_dot_segments),
    ]


VolumeSpec = Annotated[S3Volume | AzureBlobVolume | PathVolume, Field(discriminator="kind")]
VOLUME_KINDS = ("s3", "azureblob", "path")
