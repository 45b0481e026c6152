"""Checks of `api.auth` that stand in for what PostgREST 12.2.3 would refuse at start.

The api rules (rules/api.py) call it; kept apart so that each rule sits next to the PostgREST
source it reproduces:

- `role_claim` becomes `jwt-role-claim-key = ."<claim>"`, or, for a path (`.a.b[0]`), each
  key quoted. PostgREST's JSPath parser takes a quoted key as `"` followed by any characters
  except `"` and a closing `"`, with no escape (src/PostgREST/Config/JSPath.hs@v12.2.3:44-51).
  A claim name containing `"` therefore cannot be written at all, and PostgREST would stop
  at start; it is refused here instead, as is a path that grammar does not read.
- `audience` becomes `jwt-aud`; PostgREST parses it with jose's `stringOrUri`, which takes any
  string without `:` and otherwise only a URI (src/PostgREST/Config.hs@v12.2.3:329-334).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..diagnostics import Path

# RFC 3986 absolute URI, the shape jose's stringOrUri requires of a value containing ":".
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*$")


Step = tuple[str, str]  # ("key", name) or ("index", "<n>")
_BARE = re.compile(r"[\w$@]+")  # Parsec's alphaNum (Unicode) plus _ $ @ (JSPath.hs:44-47)


def claim_path(role_claim: str) -> tuple[Step, ...] | None:
    """The claim path of `role_claim`: a top-level claim name, or, starting with ".", a
    PostgREST JSPath (`.realm_access.roles[0]`, `."https://x.example/claims".role`): one or
    more `.key` (bare, or quoted without a quote inside) each optionally followed by `[n]`
    (src/PostgREST/Config/JSPath.hs@v12.2.3:35-51). None when it is no valid path."""
    if not role_claim.startswith("."):
        return None if '"' in role_claim else (("key", role_claim),)
    steps: list[Step] = []
    at = 0
    while at < len(role_claim):
        if role_claim[at] != ".":
            return None
        at += 1
        bare = _BARE.match(role_claim, at)
        if bare:
            steps.append(("key", bare.group(0)))
            at = bare.end()
        elif role_claim.startswith('"', at):
            end = role_claim.find('"', at + 1)
            if end < 0:
                return None
            steps.append(("key", role_claim[at + 1:end]))
            at = end + 1
        else:
            return None
        index = re.compile(r"\[(\d+)\]").match(role_claim, at)
        if index:
            steps.append(("index", index.group(1)))
            at = index.end()
    return tuple(steps) if steps else None


def role_claim_key(steps: tuple[Step, ...]) -> str:
    """The `jwt-role-claim-key` JSPath: every key quoted, so that any claim name PostgREST can
    express (URLs such as `https://example.com/role` included) is one key."""
    return "".join('."' + value + '"' if kind == "key" else f"[{value}]"
                   for kind, value in steps)


def check(path: Path, role_claim: str, user_claim: str, audience: str,
          error: Callable[[Path, str], None]) -> None:
    """Report the auth settings PostgREST (or the generated SQL) cannot take."""
    if role_claim and claim_path(role_claim) is None:
        if not role_claim.startswith("."):
            error(path + ("role_claim",),
                  f"role_claim {role_claim!r} contains '\"': PostgREST's jwt-role-claim-key "
                  "can quote a claim name but has no escape for '\"' in it, so it would not "
                  "start. Have the identity provider use a claim name without '\"'")
        else:
            error(path + ("role_claim",),
                  f"role_claim {role_claim!r} is not a claim path PostgREST reads: write "
                  "one or more .key or .key[n] steps, a key being letters, digits, _ $ @ or "
                  'a "quoted name" without a quote inside, e.g. .realm_access.roles[0]')
    for key, value in (("role_claim", role_claim), ("user_claim", user_claim)):
        if value and not value.strip():
            error(path + (key,), f"{key} is blank; leave it out for the default or name the "
                                 "token's claim")
    if audience and ":" in audience and not _URI.match(audience):
        error(path + ("audience",),
              f"audience {audience!r} contains ':' but is not a URI; PostgREST accepts as "
              "jwt-aud a plain string without ':' or a URI (https://api.example.com)")
