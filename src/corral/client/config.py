"""Where the client finds its server, token, workspace and experiment.

Each setting comes from the first of: the argument or command-line option, the environment (``CORRAL_SERVER``,
``CORRAL_TOKEN``, ``CORRAL_WORKSPACE``, ``CORRAL_EXPERIMENT``), the active profile of the config file, the default
(the local server, the token it wrote to ``$CORRAL_HOME/token``, workspace ``default``).

The config file (``$CORRAL_CONFIG``, else ``$XDG_CONFIG_HOME/corral/config.yaml``, else
``~/.config/corral/config.yaml``) holds named profiles and the current one; ``CORRAL_PROFILE`` or ``corral
--profile NAME`` picks another for one command::

    current: gpu-lab
    profiles:
      gpu-lab: {server: "http://gpu-box:8765", token: "...", workspace: vision, experiment: resnet}
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from corral.core.errors import InvalidRequest, NotFound
from corral.core.specs import NAME_PATTERN

DEFAULT_SERVER = "http://127.0.0.1:8765"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}

#: The profile ``--profile`` chose for this process (it outranks ``CORRAL_PROFILE``).
_chosen_profile: str | None = None


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    server: str | None = None
    token: str | None = None
    workspace: str | None = Field(None, pattern=NAME_PATTERN)
    experiment: str | None = Field(None, pattern=NAME_PATTERN)

    @field_validator("server")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and (urlparse(value).scheme not in ("http", "https") or not urlparse(value).hostname):
            raise ValueError(f"must be an http:// or https:// URL such as http://gpu-box:8765, got {value!r}")
        return value


class ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current: str | None = None
    profiles: dict[str, Profile] = {}


def config_path() -> Path:
    if os.environ.get("CORRAL_CONFIG"):
        return Path(os.environ["CORRAL_CONFIG"]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or "~/.config").expanduser()
    return base / "corral" / "config.yaml"


def load_config() -> ConfigFile:
    """The config file, or an empty one where there is none; a broken one is an error naming the file. Read and
    parsed once per version of the file (a client resolves several settings from it)."""
    path = config_path()
    try:
        stat = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return ConfigFile()
    except OSError as exc:
        raise InvalidRequest(f"cannot read the config file {path}: {exc.strerror}") from None
    return _parsed(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _parsed(path: Path, mtime_ns: int, size: int) -> ConfigFile:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidRequest(f"cannot read the config file {path}: {exc.strerror}") from None
    try:
        return ConfigFile.model_validate(yaml.safe_load(text) or {})
    except (yaml.YAMLError, ValidationError) as exc:
        raise InvalidRequest(f"the config file {path} is not valid: {exc}") from None


def save_config(data: ConfigFile) -> Path:
    """Write the config file atomically, readable by its owner only (it holds tokens)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(data.model_dump(exclude_none=True), sort_keys=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".yaml")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _parsed.cache_clear()  # a rewrite within the file system's time resolution must not read as the old one
    return path


def choose_profile(name: str | None) -> None:
    """Use profile ``name`` for the rest of this process (``corral --profile NAME``)."""
    global _chosen_profile
    _chosen_profile = name


def active_profile_name() -> str | None:
    return _chosen_profile or os.environ.get("CORRAL_PROFILE") or load_config().current


def active_profile(name: str | None = None) -> Profile:
    """Profile ``name``, else the one in use: an empty one where none is chosen; a chosen one that does not exist
    is an error."""
    name = name or active_profile_name()
    if name is None:
        return Profile()
    data = load_config()
    if name not in data.profiles:
        known = ", ".join(sorted(data.profiles)) or "none"
        raise NotFound(f"profile {name!r} is not in {config_path()} (profiles: {known}); see `corral config list`")
    return data.profiles[name]


#: Each setting's environment variable.
ENV_VARS = {"server": "CORRAL_SERVER", "token": "CORRAL_TOKEN", "workspace": "CORRAL_WORKSPACE",
            "experiment": "CORRAL_EXPERIMENT"}  # fmt: skip


def setting_source(field: str) -> str | None:
    """Where a setting comes from: its environment variable's name, ``profile NAME``, or None (the default)."""
    if os.environ.get(ENV_VARS[field]):
        return ENV_VARS[field]
    if getattr(active_profile(), field):
        return f"profile {active_profile_name()}"
    return None


def _setting(field: str, profile: str | None) -> Any:
    return os.environ.get(ENV_VARS[field]) or getattr(active_profile(profile), field)


def home() -> Path:
    return Path(os.environ.get("CORRAL_HOME") or "~/.corral").expanduser()


def server_url(profile: str | None = None) -> str:
    return str(_setting("server", profile) or DEFAULT_SERVER).rstrip("/")


def workspace(profile: str | None = None) -> str:
    return str(_setting("workspace", profile) or "default")


def experiment(profile: str | None = None) -> str | None:
    value = _setting("experiment", profile)
    return str(value) if value else None


def token(server: str | None = None, profile: str | None = None) -> str | None:
    """``CORRAL_TOKEN``, else the profile's, else, for a server on this machine only, the admin token the local
    server wrote to ``$CORRAL_HOME/token`` (it is never sent to another machine)."""
    value = _setting("token", profile)
    if value:
        return str(value)
    if urlparse(server or server_url(profile)).hostname not in LOCAL_HOSTS:
        return None
    path = home() / "token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
