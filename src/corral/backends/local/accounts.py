"""Unix accounts that users' processes run as, where the server runs as root (as Slurm runs jobs as their user).

A process started for an account gets its uid, its primary group and no other group, ``HOME`` (its home when it
has one it owns, else the process's working directory), ``USER`` and ``LOGNAME``. The directories it must write
(:attr:`~corral.launch.plan.LaunchPlan.owned_dirs`) become its own with all in them; the server's folders above
them, within the server's home, are opened for passage only (0700 -> 0711: no listing), so what the server
keeps there — the database, the token, the secrets' key, code archives, other jobs — stays unreadable.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from corral.core.errors import InvalidRequest


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run as this account: util-linux's ``setpriv`` drops to it, then becomes ``argv`` (same pid,
        same session). Cheaper than ``subprocess.Popen(user=...)``, which must fork the whole server instead of
        vfork-ing it, and works where a starter cannot switch accounts itself (uvloop's subprocesses)."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--", *argv]

    def environment(self, workdir: str) -> dict[str, str]:
        home = self.home if _owned_dir(self.home, self.uid) else workdir
        return {"HOME": home, "USER": self.name, "LOGNAME": self.name}


def _owned_dir(path: str, uid: int) -> bool:
    try:
        return Path(path).is_dir() and os.stat(path).st_uid == uid
    except OSError:
        return False


def account(name: str) -> Account:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise InvalidRequest(f"unix_user: no Unix account {name!r} on this machine") from None
    return Account(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, home=entry.pw_dir)


def open_for_passage(path: str | Path, *, within: Path) -> None:
    """Open ``path`` and the folders above it, up to and including ``within``, for passage (0700 -> 0711) where
    they are the server's; folders outside ``within`` are never changed."""
    me = os.geteuid()
    for folder in (Path(path), *Path(path).parents):
        if not folder.is_relative_to(within):
            break
        st = os.stat(folder)
        if st.st_uid == me and st.st_mode & 0o777 == 0o700:
            os.chmod(folder, 0o711)


#: Permission bits of one class (owner, group, others): may write, may pass.
WRITE, PASS = 0o2, 0o1


def _may(owner: Account, folder: Path, bit: int) -> bool:
    """Whether ``owner`` (its uid, its primary group) holds ``bit`` on ``folder`` by its mode."""
    st = os.stat(folder)
    shift = 6 if st.st_uid == owner.uid else 3 if st.st_gid == owner.gid else 0
    return bool((st.st_mode >> shift) & bit)


def check_dirs(owner: Account, dirs: tuple[str, ...], *, within: Path) -> None:
    """Before anything is made: ``owner`` can pass every folder above ``dirs`` that the server does not open
    for it (those outside ``within``: a home under ``/root`` is not reachable by other accounts), and a folder
    outside the server's home (an output's) is made for ``owner`` only where they could make it themselves —
    the nearest folder of it that exists, links resolved, is theirs to write."""
    for path in dirs:
        for folder in Path(path).parents:
            if not folder.is_relative_to(within) and folder.exists() and not _may(owner, folder, PASS):
                raise PermissionError(
                    f"{path}: the Unix account {owner.name!r} cannot pass {folder} (mode "
                    f"{stat.S_IMODE(folder.stat().st_mode):o}); let other accounts pass it (chmod o+x) or put "
                    "the server's home (CORRAL_HOME) where they can"
                )
        if Path(path).is_relative_to(within):
            continue
        existing = Path(path)
        while not existing.exists():
            existing = existing.parent
        real = Path(os.path.realpath(existing))
        if not _may(owner, real, WRITE):
            raise PermissionError(f"{path}: the Unix account {owner.name!r} may not write {real}")


def give_dirs(owner: Account, dirs: tuple[str, ...], *, within: Path) -> None:
    """Make ``dirs`` (created if missing) and everything in them ``owner``'s; open the server's own folders above
    them, up to and including ``within``, for passage (:func:`check_dirs` first)."""
    for top in dirs:
        os.makedirs(top, exist_ok=True)
        open_for_passage(Path(top).parent, within=within)
        for root, subdirs, files in os.walk(top):  # symbolic links are not followed, and changed themselves
            for name in (root, *(os.path.join(root, n) for n in (*subdirs, *files))):
                st = os.lstat(name)
                # A file linked from elsewhere (a hard link the job made) is not the job's to be given.
                if st.st_uid != owner.uid and (stat.S_ISDIR(st.st_mode) or st.st_nlink == 1):
                    os.lchown(name, owner.uid, owner.gid)


#: Accounts made for Corral users are named ``corral-<user>`` (what a Unix name allows of it).
ACCOUNT_PREFIX = "corral-"


def account_name(user: str) -> str:
    return (ACCOUNT_PREFIX + re.sub(r"[^a-z0-9_-]", "-", user.lower()))[:32]


class LocalAccounts:
    """Accounts on this machine: an existing one an admin names, else ``corral-<user>``, made with ``useradd``
    (a system account without a password, a home or a login shell) unless it exists."""

    def ensure(self, user: str, unix_user: str | None) -> str:
        if unix_user is not None:
            return account(unix_user).name
        name = account_name(user)
        try:
            pwd.getpwnam(name)
        except KeyError:
            try:
                made = subprocess.run(
                    ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                     "--shell", "/usr/sbin/nologin", name],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
            except OSError as exc:
                raise InvalidRequest(f"cannot make the Unix account {name!r}: {exc}") from None
            if made.returncode != 0:
                raise InvalidRequest(f"cannot make the Unix account {name!r}: {made.stderr.strip()}") from None
        return name
