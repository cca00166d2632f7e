"""The one redaction helper: every error text that may reach a log, a status file or stderr.

A secret can leak in more shapes than its plain value: as raw input with a trailing newline
(``b'Token abc\\n'``), escaped by ``repr``, percent-encoded in a URL, base64-encoded in a Basic
``Authorization`` header, or as the ``user:password@`` part of any URL. :func:`redact` masks
every one of those forms of the secrets it is given, and URL credentials and ``Authorization``
values even when it was given no secret at all (an error raised before settings were loaded).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Iterable
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "redact", "secret_forms"]

MASK = "***"

# scheme://userinfo@ -- the userinfo is everything up to the last '@' before the host.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,15}://)[^\s/?#'\"<>@]*@")
# Authorization header values ('Token x', 'Bearer x', 'Basic x'): the schemes as HTTP spells them.
_AUTH_VALUE = re.compile(r"\b(Token|Bearer|Basic)(\s+)[^\s'\",}]+")


def secret_forms(secret: str) -> set[str]:
    """Every spelling of ``secret`` an error message could carry (never shorter than 1 char)."""
    forms = {secret, secret.strip()}
    forms |= {repr(f)[1:-1] for f in list(forms)}  # escaped: a newline as \n, a quote as \'
    forms |= {json.dumps(f)[1:-1] for f in list(forms)}
    for f in list(forms):
        forms |= {quote(f, safe=""), quote_plus(f, safe=""), base64.b64encode(f.encode("utf-8")).decode("ascii")}
    return {f for f in forms if f}


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every form of every secret, URL credentials and auth values masked."""
    forms = sorted({form for s in secrets if s for form in secret_forms(s)}, key=len, reverse=True)
    for form in forms:
        text = text.replace(form, MASK)
    text = _URL_USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    return _AUTH_VALUE.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
