"""Checks of `api.auth` that stand in for what PostgREST 12.2.3 would refuse at start.

The api rules (rules/api.py) call it; kept apart so that each rule sits next to the PostgREST
source it reproduces:

- `role_claim` becomes `jwt-role-claim-key = ."<claim>"`. PostgREST's JSPath parser takes a
  quoted key as `"` followed by any characters except `"` and a closing `"`, with no escape
  (src/PostgREST/Config/JSPath.hs@v12.2.3:44-51). A claim name containing `"` therefore
  cannot be written at all, and PostgREST would stop at start; it is refused here instead.
- `audience` becomes `jwt-aud`; PostgREST parses it with jose's `stringOrUri`, which takes any
  string without `:` and otherwise only a URI (src/PostgREST/Config.hs@v12.2.3:329-334).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..diagnostics import Path

# RFC 3986 absolute URI, the shape jose's stringOrUri requires of a value containing ":".
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*$")


def role_claim_key(claim: str) -> str:
    """The `jwt-role-claim-key` JSPath for a top-level claim: always quoted, so that any claim
    name PostgREST can express (URLs such as `https://example.com/role` included) is one key."""
    return '."' + claim + '"'


def check(path: Path, role_claim: str, user_claim: str, audience: str,
          error: Callable[[Path, str], None]) -> None:
    """Report the auth settings PostgREST (or the generated SQL) cannot take."""
    if '"' in role_claim:
        error(path + ("role_claim",),
              f"role_claim {role_claim!r} contains '\"': PostgREST's jwt-role-claim-key can "
              "quote a claim name but has no escape for '\"' in it, so it would not start. "
              "Have the identity provider use a claim name without '\"'")
    for key, value in (("role_claim", role_claim), ("user_claim", user_claim)):
        if value and not value.strip():
            error(path + (key,), f"{key} is blank; leave it out for the default or name the "
                                 "token's claim")
    if audience and ":" in audience and not _URI.match(audience):
        error(path + ("audience",),
              f"audience {audience!r} contains ':' but is not a URI; PostgREST accepts as "
              "jwt-aud a plain string without ':' or a URI (https://api.example.com)")
