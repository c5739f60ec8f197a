"""Key-name rules of secret_mask: which attribute keys *name* a credential.

An attribute whose key names a credential has its whole value replaced. Keys are
split into name parts (on `.`, `_`, `-`, spaces and camelCase) and a blocked term
must appear as whole parts, so `http.request.header.authorization` and
`x-api-token` match while `gen_ai.usage.input_tokens` and `max_tokens` do not
(`tokens` is not `token`). A term followed by a qualifier part (`token_count`,
`token.type`, `secret.name`, ...) describes the credential rather than holding
it, so it does not match either. Pure functions and one bounded cache; the
value rules (`processors.privacy.secret_rules`) use the same matcher for
`key=value` pairs inside text.

Semantic-convention identifiers (`session.id`, `gen_ai.conversation.id`, ...)
are not credentials: they are what agent teams group and correlate by, so the
exact keys in `identifier_keys` are kept even where a term would match them
(`session.id` has the parts of `session_id`, which stays a credential in a
cookie or a query string). Precedence, from the strongest: `allowed_keys`
(left alone), a key written out in `blocked_keys` (masked, even an identifier),
`identifier_keys` (kept), then the blocked terms.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable

#: Default sensitive key terms (each split into name parts like keys are).
DEFAULT_BLOCKED_KEYS: tuple[str, ...] = (
    "password", "passwd", "passwords", "pwd", "passphrase", "pgpassword", "mysql_pwd",
    "secret", "client_secret", "secret_key",
    "token",
    "api_key", "apikey",
    "authorization",
    "cookie", "cookies", "set_cookie",
    "session_id", "sessionid",
    "credential", "credentials",
    "private_key", "privatekey",
    "access_key", "accesskey",
    "account_key", "accountkey",
)

#: OpenTelemetry semantic-convention identifiers, kept by default although a term may match them:
#: they name a session, conversation or user, they do not grant access to anything.
DEFAULT_IDENTIFIER_KEYS: tuple[str, ...] = (
    "session.id", "session.previous_id",
    "gen_ai.conversation.id", "gen_ai.agent.id", "gen_ai.response.id", "gen_ai.tool.call.id",
    "user.id", "enduser.id", "enduser.pseudo.id",
    "client.id", "messaging.client.id",
)

#: Name parts that, after a sensitive term, make the key describe the credential instead
#: of holding it: `llm.token_count.prompt`, `oauth.token.type`, `k8s.secret.name`.
KEY_QUALIFIERS: frozenset[str] = frozenset({
    "count", "counts", "usage", "limit", "limits", "budget", "length", "len", "size", "type", "types",
    "kind", "ttl", "expiry", "expires", "expiration", "expire", "name", "names", "url", "uri",
    "endpoint", "path", "file", "enabled", "required", "present", "version", "format", "source",
    "provider", "providers", "policy", "rotation",
})

_PART_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")

NOT_SENSITIVE = 0
SENSITIVE = 1
ALLOWED = 2

_KEY_CACHE_MAX = 8192


def key_parts(key: str) -> list[str]:
    """Lower-cased name parts of a key: `x-api-Token` → ['x', 'api', 'token'], `APIKey` → ['api', 'key']."""
    return [p.lower() for p in _PART_RE.findall(key)]


class KnownKeys(dict):  # type: ignore[type-arg]
    """Key -> classification, computed by `fn` on a miss and remembered for at most `limit` keys (keys of
    unbounded cardinality cost a recomputation, never memory). A lookup of a known key is a plain dict
    lookup, also from C (the C walker's credential_pair check subscripts it)."""

    def __init__(self, fn: Callable[[str], int], limit: int) -> None:
        super().__init__()
        self._fn = fn
        self._limit = limit

    def __missing__(self, key: str) -> int:
        c = self._fn(key)
        if len(self) < self._limit:
            self[key] = c
        return c


class KeyMatcher:
    """Classifies attribute keys as sensitive / not / explicitly allowed, with a bounded cache.

    Keys repeat across spans, so after warm-up a classification is one dict lookup.
    The cache stops growing at a fixed size (keys with unbounded cardinality cost
    a recomputation, never memory).
    """

    __slots__ = ("_allowed_exact", "_allowed_prefixes", "_kept", "_qualifiers", "known", "terms")

    def __init__(self, blocked_keys: Iterable[str] = DEFAULT_BLOCKED_KEYS, allowed_keys: Iterable[str] = (),
                 qualifiers: frozenset[str] = KEY_QUALIFIERS,
                 identifier_keys: Iterable[str] = DEFAULT_IDENTIFIER_KEYS) -> None:
        blocked_keys = tuple(blocked_keys)
        # identifiers are kept unless blocked_keys writes the key out (see the module docstring)
        self._kept = frozenset(k.lower() for k in identifier_keys) - {b.lower() for b in blocked_keys}
        terms = []
        for t in blocked_keys:
            parts = tuple(key_parts(t))
            if parts:
                terms.append(parts)
        #: the blocked terms as name parts (the scan's key anchors are made from them)
        self.terms: tuple[tuple[str, ...], ...] = tuple(terms)
        exact, prefixes = set(), []
        for a in allowed_keys:
            a = a.lower()
            if a.endswith("*"):
                prefixes.append(a[:-1])
            elif a:
                exact.add(a)
        self._allowed_exact = frozenset(exact)
        self._allowed_prefixes = tuple(prefixes)
        self._qualifiers = qualifiers
        #: the classifications so far (`known[key]` classifies: see KnownKeys)
        self.known = KnownKeys(self._classify, _KEY_CACHE_MAX)

    def classify(self, key: str) -> int:
        """NOT_SENSITIVE, SENSITIVE or ALLOWED (listed in `allowed_keys`: leave the value alone).

        An identifier (`identifier_keys`) is NOT_SENSITIVE: its value still goes through
        value detection, only the key-name rule leaves it alone."""
        return self.known[key]  # type: ignore[no-any-return]

    def _classify(self, key: str) -> int:
        low = key.lower()
        if low in self._allowed_exact or any(low.startswith(p) for p in self._allowed_prefixes):
            return ALLOWED
        if low in self._kept:
            return NOT_SENSITIVE
        parts = key_parts(key)
        return SENSITIVE if self.parts_sensitive(parts) else NOT_SENSITIVE

    def parts_sensitive(self, parts: list[str]) -> bool:
        n = len(parts)
        for term in self.terms:
            k = len(term)
            first = term[0]
            for i in range(n - k + 1):
                if parts[i] == first and tuple(parts[i:i + k]) == term:
                    if not any(p in self._qualifiers for p in parts[i + k:]):
                        return True
        return False

