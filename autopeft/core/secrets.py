"""Passwords in storage URLs: found, and masked wherever autopeft shows or keeps a URL.

Rule: autopeft never prints, logs, renders or stores a database password. A URL is shown
with its password replaced by ``PASSWORD``; the password itself is better given to libpq
outside the URL (``PGPASSWORD`` or ``~/.pgpass``), which PostgreSQL's driver reads when the
URL has none (docs/cluster.md).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MASK = "PASSWORD"
#: ``scheme://user:password@``: the password runs to the last ``@`` before the host part.
_USER_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:@/\s'\"]*:)[^\s'\"/]*@")
#: ``?password=...`` or ``&sslpassword=...`` in a query.
_QUERY_PASSWORD = re.compile(r"([?&][^=&\s'\"]*password[^=&\s'\"]*=)[^&\s'\"]*", re.I)


def has_password(url: str | None) -> bool:
    """Whether a storage URL carries a password (in its user part or its query)."""
    if not url:
        return False
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    return parts.password is not None or any("password" in k.lower() for k, _ in query)


def masked(text: str) -> str:
    """``text`` with the password of every URL in it shown as ``PASSWORD``.

    For a URL or any text holding URLs (an error message, a command line); to show, never to
    connect with.
    """
    text = _USER_PASSWORD.sub(rf"\g<1>{MASK}@", text)
    return _QUERY_PASSWORD.sub(rf"\g<1>{MASK}", text)


def masked_config(dump: dict[str, Any]) -> dict[str, Any]:
    """A study configuration's JSON dump with its ``storage`` URL masked (to keep or show)."""
    storage = dump.get("storage")
    return {**dump, "storage": masked(storage)} if isinstance(storage, str) else dump
