"""Who is really running this process, for audit rows beside what a caller claims.

The OS account comes from the process's real uid (not $USER, which anyone can set), with
the host name: enough to tell which machine and login changed the breaker.
"""

from __future__ import annotations

import os
import socket


def os_identity() -> str:
    """'login@host' of the real uid; 'uid N@host' when the uid has no account entry."""
    try:
        import pwd

        login = pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        login = f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{login}@{socket.gethostname()}"


def installation_id(home: str) -> str:
    """A short, stable name for one V6 installation (its store root, resolved): the same
    home always gives the same id, two homes on one machine never share one. Lowercase
    letters, digits and dashes, as Prefect artifact keys require."""
    import hashlib
    from pathlib import Path

    where = home if "://" in home else str(Path(home).resolve())  # ./data differs per home
    digest = hashlib.sha256(where.encode()).hexdigest()[:10]
    return f"v6-{digest}"
