"""Secret redaction: the one list of what counts as a secret, and the one masker.

Three kinds of text leave the daemon for places others read (committed records, the journal,
the site): engine log tails, our own log lines, and error messages that quote a command or a
URL. All three are cleaned here, by the same rules, so that a secret hidden in one is hidden in
all:

- a *value* is secret when its variable's name looks like one (:data:`SECRET_HINT`: ``*TOKEN*``,
  ``*API_KEY*``, ...) or when it is the password inside a URL-valued variable
  (``AUTOTUNER_REPO=https://u:TOKEN@host/...``: git quotes the password alone in some failures);
- every URL's userinfo is masked (``https://user:token@host`` → ``https://***@host``), whatever
  it holds, since a URL in a message may come from anywhere.

Values shorter than 4 characters are never treated as secrets: blanking "1" would shred the text
and protect nothing. Secrets are replaced longest first, so that one containing another is
replaced whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

__all__ = ["SECRET_HINT", "Redactor", "mask_urls", "redact", "secret_values"]

#: variable names whose values are secrets
SECRET_HINT = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|CREDENTIAL", re.I)

MIN_SECRET_LENGTH = 4

_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_URL_USERINFO_VALUE = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://([^/@\s]+)@")


def mask_urls(text: str) -> str:
    """Hide the userinfo of every URL: ``https://user:token@host/x`` → ``https://***@host/x``."""
    return _URL_USERINFO.sub(r"\1***@", text)


def _url_secrets(environ: Mapping[str, str]) -> list[str]:
    # a user name without a password is a secret only when it is long enough to be a token
    # (``https://ghp_...@host``); ``git@`` is not
    found: list[str] = []
    for value in environ.values():
        for userinfo in _URL_USERINFO_VALUE.findall(value):
            user, sep, password = userinfo.partition(":")
            if sep and len(password) >= MIN_SECRET_LENGTH:
                found.append(password)
            elif not sep and len(user) >= 16:
                found.append(user)
    return found


def secret_values(env: Mapping[str, str]) -> list[str]:
    """The secret values of an environment (see the module docstring), longest first."""
    values = {v for k, v in env.items() if SECRET_HINT.search(k) and len(v) >= MIN_SECRET_LENGTH}
    values.update(_url_secrets(env))
    return sorted(values, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every given secret value blanked to ``***`` and every URL's userinfo masked."""
    for value in secrets:
        text = text.replace(value, "***")
    return mask_urls(text)


class Redactor:
    """A growing set of secret values and :meth:`redact` over them (thread-safe for readers:
    :meth:`add` swaps in a new list)."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(*values)

    @classmethod
    def from_env(cls, env: Mapping[str, str], extra: Iterable[str] = ()) -> Redactor:
        return cls([*secret_values(env), *extra])

    def add(self, *values: str) -> None:
        merged = set(self._secrets) | {v for v in values if len(v) >= MIN_SECRET_LENGTH}
        self._secrets = sorted(merged, key=len, reverse=True)

    @property
    def values(self) -> list[str]:
        return list(self._secrets)

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)
