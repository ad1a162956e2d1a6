"""llama-server's API key, for a server that other machines can reach.

llama-server on 127.0.0.1 (or ::1, localhost) answers only this machine; on any other address
(0.0.0.0, a LAN address, a host name) anyone who can reach the port can use the model, read
its slots and fill its memory. So when the chosen host is not a loopback address the wizard
gives llama-server an API key, which it then requires of every request
(`Authorization: Bearer KEY`; /health stays open).

The key is generated once (secrets.token_urlsafe) and kept in
`$XDG_CONFIG_HOME/llama-wizard/llama-server-api-key` (~/.config/llama-wizard/ by default), mode
0600, so clients keep working from one run to the next. It reaches llama-server through the
environment (`LLAMA_API_KEY`, which llama-server reads as its --api-key: an argument would
show in `ps` to every user of the machine), and it is never printed: the commands the wizard
shows refer to the variable (`"${LLAMA_API_KEY:?}"`) and say where the file is.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

from llama_wizard.detect.errors import ActionableError

API_KEY_VARIABLE = "LLAMA_API_KEY"  # llama-server's own: `--api-key KEY (env: LLAMA_API_KEY)`
KEY_FILE_NAME = "llama-server-api-key"
# llama-server's options that give it a key already: the person's own key wins over ours.
KEY_OPTIONS = ("--api-key", "--api-key-file")
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class ApiKeyUnusable(ActionableError):
    """The key file cannot be read or written."""


def is_loopback(host: str) -> bool:
    """Whether llama-server on `host` answers only this machine: 127.0.0.0/8, ::1 or localhost.
    Any other name may resolve to an address others reach, so it counts as reachable."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def needs_api_key(host: str, args: Sequence[str] = ()) -> bool:
    """llama-server on `host` gets the wizard's key: the host is reachable from other machines
    and `args` (what the person added) give no key of their own."""
    own = any(a.split("=", 1)[0] in KEY_OPTIONS for a in args)
    return not own and not is_loopback(host)


def api_key_path() -> Path:
    from llama_wizard.tui.settings import config_dir

    return config_dir() / KEY_FILE_NAME


def ensure_api_key(path: Path | None = None) -> str:
    """The key in `path` (default api_key_path()), made (mode 0600) on first use. A file that
    others may read is made private again. Raises ApiKeyUnusable (with a fix) when the file
    cannot be read or written."""
    path = path or api_key_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: two wizards starting at once agree on one key (the second reads it).
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(secrets.token_urlsafe(32) + "\n")
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            raise IsADirectoryError(21, "not a file")
        if stat.S_IMODE(status.st_mode) & 0o077:
            path.chmod(0o600)
        key = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ApiKeyUnusable(
            f"llama-server's API key cannot be kept in {path}: {error.strerror or error}.",
            "Make that directory writable (or point XDG_CONFIG_HOME at a writable one), or "
            "listen on 127.0.0.1, which needs no key.",
        ) from None
    if not key or any(c.isspace() or c == "," for c in key):
        # llama-server splits --api-key on commas; a blank key would let anyone in.
        raise ApiKeyUnusable(
            f"{path} does not hold a usable API key (it is empty, or has spaces or commas).",
            f"Delete {path}: the wizard makes a new key there.",
        )
    return key


def key_note(host: str) -> str:
    """Why there is a key and where it is, for every face (the Launch step, plain mode, `run`,
    the Done step's commands)."""
    return (
        f"llama-server listens on {host}, which other machines can reach, so it requires an API "
        f"key: clients send `Authorization: Bearer KEY`, with the key from {api_key_path()} "
        "(readable only by you)."
    )


def export_line() -> str:
    """The shell line that puts the key in the variable the shown commands refer to."""
    import shlex

    return f'export {API_KEY_VARIABLE}="$(cat {shlex.quote(str(api_key_path()))})"'
