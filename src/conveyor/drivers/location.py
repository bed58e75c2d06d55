"""Where a driver keeps its jobs, parsed once into what may be shown and what must not be.

A location is what a driver is given: a URL, a libpq "key=value" string, a file path or a
registered name. `Location.parse` finds its passwords, and every message, log line and repr
that names a backend is built from the result: `shown` is the location with each password
replaced by ***, and `mask` hides the same passwords (as written and as decoded) in any other
text, such as a client library's error message.

Passwords are looked for in three places:

- A URL's userinfo, `scheme://user:password@host/...`. The userinfo runs to the LAST `@`:
  RFC 3986 wants `@ / ? #` percent-encoded in a password, but a pasted one may hold them, and
  cutting at the first `/` (as a URL parser does) would show the rest. A path or query that
  itself holds an `@` is therefore hidden along with the password: more is hidden, never less.
- A query parameter whose name says it is one: `?password=`, `sslpassword=`, `token=`, ...
- A libpq keyword string, `host=db password='it\\'s secret'`, the value quoted or not.

A text that is none of these but holds `:` then `@` (a URL missing its `//`, say) has
everything between the first `:` and the last `@` hidden.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote, unquote_plus

from conveyor.errors import ConfigError

__all__ = ["HIDDEN", "Location", "hide_passwords", "safe_url"]

#: What a password is replaced by.
HIDDEN = "***"

#: What replaces a client's message about a URL whose password holds `@ / ? #` unencoded: the
#: client may have cut the URL inside the password and may quote a piece of it.
UNREADABLE = (
    "the message is not shown, as it may quote part of the password: write @ / ? # in a URL's"
    " password as %40 %2F %3F %23, and @ elsewhere in the URL as %40"
)

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
#: Query and keyword names whose value is a secret.
_SECRET_NAME = re.compile(r"pass|pwd|secret|token", re.IGNORECASE)
#: One libpq `keyword = value`; a quoted value may lack its closing quote (then it runs on).
_KEYWORD = re.compile(
    r"\s*(?P<key>[^\s=]+)\s*=\s*"
    r"(?P<value>'(?:[^'\\]|\\.)*(?:'|\\?\Z)|(?:[^\s\\]|\\.|\\\Z)*)",
    re.DOTALL,
)
_WORD = re.compile(r"\s*\S+")
_URL_DELIMITERS = "@/?#"
#: A URL's password in any text, to the last `@` of the URL's word (a pasted password may hold
#: an `@` itself). Linear in the text's length, as an exception's message may be megabytes: a
#: scheme is looked for only where a run of scheme characters begins (not again at each of its
#: characters), and a word without an `@` after its `scheme://user:` is passed whole (group 2
#: None), not tried again from each later `scheme://` in it.
_ANY_URL_PASSWORD = re.compile(
    r"(?<![A-Za-z0-9+.-])([0-9+.-]*[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)(?:(\S*)@|\S*)"
)


@dataclass(frozen=True, slots=True)
class Location:
    """A location as fit to show (`shown`), and the secrets to hide wherever they appear."""

    shown: str = ""
    secrets: frozenset[str] = field(default=frozenset(), repr=False)
    #: True when a URL's password holds `@ / ? #` unencoded: a client may read it otherwise.
    ambiguous: bool = False

    @classmethod
    def parse(cls, text: str) -> Location:
        """Find the passwords in `text` (a URL, libpq keywords, a path or a name)."""
        match = _SCHEME.match(text)
        if match:
            return _parse_url(text, match.end())
        if "=" in text:
            return _parse_keywords(text)
        return _parse_other(text)

    def with_secret(self, secret: str | None) -> Location:
        """The same location, hiding `secret` too (a password a client library decoded)."""
        return self if not secret else _hiding(self.shown, [*self.secrets, secret], self.ambiguous)

    def mask(self, text: str) -> str:
        """`text` with every secret, as written or decoded, replaced by ***."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, HIDDEN)
        return text

    def scrub(self, message: str) -> str:
        """A client library's `message`, fit to show: masked, or withheld when the URL is
        ambiguous (the client may have split it inside the password and quote a piece)."""
        return UNREADABLE if self.ambiguous else self.mask(message)

    def check_options(self, keys: Iterable[str], allowed: Container[str], listed: str) -> None:
        """ConfigError naming the first of the URL's query `keys` not `allowed` (its client
        would ignore it, or fail on it later) and what the options are (`listed`)."""
        unknown = next((key for key in keys if key not in allowed), None)
        if unknown is not None:
            raise ConfigError(
                f"{self.refusing(unknown)!r}: unknown option {self.mask(unknown)!r}; the options"
                f" are {listed}"
            )

    def refusing(self, option: str) -> str:
        """`shown` with the value of the URL's query option `option` hidden too: an option the
        client refuses may be a password under a misspelt name (`?pasword=`)."""
        start = self.shown.rfind("@") + 1  # the query is after the userinfo, if any
        rest, _ = _mask_query(self.shown[start:], lambda key: key == option)
        return self.shown[:start] + rest


def safe_url(text: str) -> str:
    """`text` (a URL, libpq keywords, a path or a name) with every password replaced by ***."""
    return Location.parse(text).shown


def _hiding(shown: str, secrets: list[str], ambiguous: bool = False) -> Location:
    """A Location hiding each of `secrets` in every form a client may decode it to."""
    forms = {form for secret in secrets for form in (secret, unquote(secret), unquote_plus(secret))}
    return Location(shown, frozenset(forms - {"", HIDDEN}), ambiguous)


def _parse_url(text: str, start: int) -> Location:
    """scheme://[user[:password]@]host[:port][/path][?query][#fragment]."""
    at = text.rfind("@", start)
    user, colon, password = text[start : max(at, start)].partition(":")
    secrets = [password] if colon else []
    userinfo = "" if at < 0 else user + (f":{HIDDEN}" if colon else "") + "@"
    rest, query_secrets = _mask_query(text[at + 1 if at >= 0 else start :])
    ambiguous = any(char in password for char in _URL_DELIMITERS)
    return _hiding(text[:start] + userinfo + rest, secrets + query_secrets, ambiguous)


def _mask_query(
    rest: str, secret: Callable[[str], object] = _SECRET_NAME.search
) -> tuple[str, list[str]]:
    """`rest` (host, path, query) with the values of secret query options hidden (by default
    those whose name says so), and those values."""
    head, mark, tail = rest.partition("?")
    if not mark:
        return rest, []
    query, hash_mark, fragment = tail.partition("#")
    pairs: list[str] = []
    secrets: list[str] = []
    for pair in query.split("&"):
        key, equals, value = pair.partition("=")
        if equals and value and secret(unquote_plus(key)):
            secrets.append(value)
            pair = f"{key}={HIDDEN}"
        pairs.append(pair)
    return f"{head}?{'&'.join(pairs)}{hash_mark}{fragment}", secrets


def _parse_keywords(text: str) -> Location:
    """A libpq connection string: `keyword=value` pairs, values quoted ('...') or not, with
    backslash escapes. What cannot be read as a pair is skipped a word at a time."""
    shown: list[str] = []
    secrets: list[str] = []
    position = 0
    while position < len(text):
        match = _KEYWORD.match(text, position) or _WORD.match(text, position)
        if match is None:  # only spaces are left
            shown.append(text[position:])
            break
        value = match.groupdict().get("value")
        if value and _SECRET_NAME.search(match["key"]):
            secrets += [value, _unquoted(value)]
            shown.append(text[position : match.start("value")] + HIDDEN)
        else:
            shown.append(match.group())
        position = match.end()
    return _hiding("".join(shown), secrets)


def _unquoted(value: str) -> str:
    """A libpq keyword value as libpq reads it: quotes dropped, backslash escapes undone."""
    if value.startswith("'"):
        value = value[1:-1] if len(value) > 1 and value.endswith("'") else value[1:]
    return re.sub(r"\\(.)", r"\1", value, flags=re.DOTALL)


def _parse_other(text: str) -> Location:
    """A name or path, or a URL gone wrong ("postgresql:/u:pw@host"): anything between its
    first `:` and its last `@` is hidden."""
    colon, at = text.find(":"), text.rfind("@")
    if 0 <= colon < at:
        return _hiding(f"{text[: colon + 1]}{HIDDEN}{text[at:]}", [text[colon + 1 : at]])
    return Location(text)


def hide_passwords(text: str) -> str:
    """`text` with the password of every URL in it hidden, whatever it names: for text that
    may quote a URL no Location was made for (an exception's message). The word `password`,
    as in an example of how to write a URL (amqp://user:password@host), is left."""
    return _ANY_URL_PASSWORD.sub(_hidden, text)


def _hidden(url: re.Match[str]) -> str:
    return url[0] if url[2] in (None, "password") else f"{url[1]}{HIDDEN}@"
