"""The per-home secret that salts hashed columns (``privacy.hash`` of a use-case file).

A salt derived from something public (the use case's name) would let anyone who
sees a hashed phone number find it again by hashing every phone number. The salt
is instead 32 random bytes made once per CivicML home, in
``<home>/secrets/hash-salt`` (file mode 0600, folder 0700), and read from there
afterwards: the same home always hashes a value the same way, two homes never
do. Machines that must produce the same hashes (a team's tuning workers) copy
that file; losing it only means new hashes, never a lost model (a hashed column
is an id, never a feature).

Made without a race: the secret is written to a private temporary file that is
then hard-linked into place, which fails if another process got there first (its
secret is then used).
"""

from __future__ import annotations

import os
import secrets
import uuid
from pathlib import Path

from civicml.errors import InvalidInput

SALT_FILE = Path("secrets") / "hash-salt"


def home_salt(home: Path | str) -> str:
    """The home's secret salt, made (mode 0600) on first use."""
    path = Path(home) / SALT_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        part = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(part, path)
        except FileExistsError:
            pass
        finally:
            part.unlink()
    salt = path.read_text().strip()
    if len(salt) < 32:
        raise InvalidInput(f"the hashing salt {path} is damaged (too short): restore it, or remove it to start "
                           f"new hashes")
    return salt
