"""idTokens: the identities sessions present (RFID cards, eMAIDs, key codes ...).

One home for what the load generator and ``csms_stub`` agree on: the token file format, the
format rules per OCPP 2.0.1 ``IdTokenEnumType`` and the tokens generated when the user gives
none. An OCPP 2.0.1 idToken is a value (string[36], case insensitive) and a type; an OCPP 1.6
idTag is a value (CiString20) without a type. OCPP 2.1 widened both: the value is up to 255
characters and the type a free string of up to 20 (the 2.0.1 types keep their spelling), so
a custom type such as ``VIN`` suits a run only when every version it offers is 2.1.

Token files hold one token a line, ``VALUE`` or ``VALUE,TYPE``; blank lines and lines
starting with ``#`` are ignored::

    # the CSMS's test cards
    04A2B3C4D5E6F7,ISO14443
    E004015012345678,ISO15693
    KRLGNC00000001,eMAID
    1234

Format rules (what ``csms_stub --strict-id-tokens`` enforces, and what a run checks at
start): ISO14443 is a 4 or 7 byte UID, 8 or 14 hex digits; ISO15693 an 8 byte UID, 16 hex
digits; MacAddress 6 bytes, 12 hex digits, optionally in pairs separated by ``:`` or ``-``;
eMAID the ISO 15118 / eMI3 contract id, 14 or 15 letters and digits (country, provider,
instance, optional check digit, which is not verified) with optional ``-`` separators;
KeyCode, Local and Central an OCPP identifierString (letters, digits and ``*-_=:+|@.``);
NoAuthorization an empty value; a custom 2.1 type an identifierString too. A 1.6 idTag
without a type is 1 to 20 printable ASCII characters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ocpp

from loadgen.protocols import OCPP16, OCPP21, OCPP201, module_for

__all__ = [
    "TYPES",
    "IdToken",
    "IdTokenError",
    "check",
    "check_unique",
    "format_problem",
    "generate",
    "load_file",
    "normalise_type",
    "parse_line",
    "type_problem",
]


def _schema(version: str) -> dict[str, Any]:
    path = Path(ocpp.__file__).parent / version / "schemas" / "AuthorizeRequest.json"
    return json.loads(path.read_text(encoding="utf-8"))["definitions"]


#: OCPP 2.0.1 IdTokenEnumType, from the schemas the ``ocpp`` package ships
TYPES: tuple[str, ...] = tuple(_schema("v201")["IdTokenEnumType"]["enum"])
#: OCPP 2.1's type is a free string (IdTokenEnumStringType) of at most this many characters
CUSTOM_TYPE_MAX_LENGTH: int = _schema("v21")["IdTokenType"]["properties"]["type"]["maxLength"]
#: the versions whose idToken type may be other than :data:`TYPES`
CUSTOM_TYPE_VERSIONS = frozenset({OCPP21.name})
#: the schemas' limits: 1.6 idTag CiString20, 2.0.1 idToken string[36], 2.1 string[255]
MAX_LENGTH = {v.name: module_for(v).ID_TOKEN_MAX_LENGTH for v in (OCPP16, OCPP201, OCPP21)}
DEFAULT_TYPE = "ISO14443"

_BY_LOWER = {name.lower(): name for name in TYPES}
_HEX = re.compile(r"[0-9A-Fa-f]+")
_IDENTIFIER = re.compile(r"[A-Za-z0-9*\-_=:+|@.]+")
_MAC = re.compile(r"[0-9A-Fa-f]{12}|[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}")
_EMAID = re.compile(r"[A-Z]{2}[A-Z0-9]{3}[A-Z0-9]{9}[A-Z0-9]?")
_PRINTABLE = re.compile(r"[\x20-\x7e]+")


class IdTokenError(ValueError):
    """A token, token file or token type that cannot be used; the message is one line and
    says where."""


@dataclass(frozen=True)
class IdToken:
    """A token value and its 2.0.1 type (None: a 1.6 idTag, or the run's default type)."""

    value: str
    type: str | None = None
    #: where it came from (``tokens.txt:3``), for error messages
    where: str = field(default="", compare=False, repr=False)

    def item(self) -> str:
        """The token as one string (a pool entry in Redis): ``VALUE`` or ``VALUE\\tTYPE``."""
        return self.value if self.type is None else f"{self.value}\t{self.type}"

    @classmethod
    def from_item(cls, item: str) -> IdToken:
        value, _, token_type = item.partition("\t")
        return cls(value, token_type or None)


def normalise_type(name: str) -> str:
    """A 2.0.1 IdTokenEnumType spelled as the schema does (``iso14443`` -> ``ISO14443``), or
    a custom 2.1 type as given. Whether the run's versions allow a custom type is only known
    later: :func:`type_problem`."""
    name = name.strip()
    canonical = _BY_LOWER.get(name.lower())
    if canonical is not None:
        return canonical
    if len(name) <= CUSTOM_TYPE_MAX_LENGTH and _IDENTIFIER.fullmatch(name):
        return name
    raise IdTokenError(
        f"unknown idToken type {name!r}: one of {', '.join(TYPES)}, or for OCPP 2.1 1 to "
        f"{CUSTOM_TYPE_MAX_LENGTH} letters, digits and *-_=:+|@."
    )


def type_problem(token_type: str, version: str) -> str | None:
    """Why a run of OCPP ``version`` cannot use ``token_type`` (normalised), or None."""
    if token_type in TYPES or version in CUSTOM_TYPE_VERSIONS:
        return None
    # one line that says the way out too: a run offering 2.1,2.0.1 may end up on 2.0.1
    return (
        f"unknown idToken type {token_type!r} for OCPP {version} (one of {', '.join(TYPES)}); "
        "other types need a run that offers OCPP 2.1 only"
    )


def format_problem(value: str, token_type: str | None) -> str | None:
    """Why ``value`` is not a well-formed token of ``token_type`` (None: a 1.6 idTag),
    or None when it is. Lengths beyond the schemas' are checked by :func:`check`."""
    if token_type is None:
        if not _PRINTABLE.fullmatch(value):
            return "an idTag is printable ASCII, at least one character"
        return None
    if token_type == "NoAuthorization":
        return None if value == "" else "a NoAuthorization idToken is empty"
    if token_type == "ISO14443":
        if len(value) in (8, 14) and _HEX.fullmatch(value):
            return None
        return "an ISO14443 idToken is a 4 or 7 byte UID: 8 or 14 hex digits"
    if token_type == "ISO15693":
        if len(value) == 16 and _HEX.fullmatch(value):
            return None
        return "an ISO15693 idToken is an 8 byte UID: 16 hex digits"
    if token_type == "MacAddress":
        if _MAC.fullmatch(value):
            return None
        return "a MacAddress idToken is 12 hex digits (pairs may be separated by : or -)"
    if token_type == "eMAID":
        if _EMAID.fullmatch(value.replace("-", "").upper()):
            return None
        return (
            "an eMAID is 14 or 15 letters and digits: country (2 letters), provider (3), "
            "instance (9), optional check digit; '-' may separate them"
        )
    if _IDENTIFIER.fullmatch(value):  # KeyCode, Local, Central
        return None
    return f"a {token_type} idToken is letters, digits and *-_=:+|@. only"


def parse_line(text: str, where: str = "") -> IdToken | None:
    """One line of a token file: ``VALUE`` or ``VALUE,TYPE``; None for a blank line or a
    ``#`` comment."""
    line = text.strip()
    if not line or line.startswith("#"):
        return None
    value, comma, token_type = line.partition(",")
    value = value.strip()
    if comma and not token_type.strip():
        raise IdTokenError(f"{where}: {line!r}: a type is missing after the comma")
    try:
        return IdToken(value, normalise_type(token_type) if comma else None, where)
    except IdTokenError as exc:
        raise IdTokenError(f"{where}: {exc}") from None


def load_file(path: str | Path) -> list[IdToken]:
    """Every token of a token file, in order; :class:`IdTokenError` names the file and line
    of the first problem (unreadable, empty, an unknown type, a malformed or repeated
    token)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise IdTokenError(f"{path}: cannot read idToken file: {reason}") from None
    tokens = [
        token
        for number, line in enumerate(text.splitlines(), start=1)
        if (token := parse_line(line, f"{path}:{number}")) is not None
    ]
    if not tokens:
        raise IdTokenError(f"{path}: the idToken file holds no tokens")
    for token in tokens:
        problem = format_problem(token.value, token.type) if token.type else None
        if problem is not None:
            raise IdTokenError(f"{token.where}: idToken {token.value!r}: {problem}")
    check_unique(tokens)
    return tokens


def check(tokens: Iterable[IdToken], version: str, default_type: str | None) -> list[IdToken]:
    """The tokens as a run of OCPP ``version`` sends them: 2.0.1 tokens without a type get
    ``default_type`` (ISO14443 if None); 1.6 tokens keep theirs (it is not sent, but the
    value must fit it). Raises :class:`IdTokenError` on the first token the version cannot
    carry (its length, or a custom type outside 2.1), that does not fit its type, or that
    repeats another."""
    limit = MAX_LENGTH[version]
    result = []
    for token in tokens:
        token_type = token.type
        if token_type is None and version != "1.6":
            token_type = default_type or DEFAULT_TYPE
        where = f"{token.where}: " if token.where else ""
        problem = type_problem(token_type, version) if token_type is not None else None
        if problem is not None:
            raise IdTokenError(f"{where}{problem}")
        if token_type == "NoAuthorization":
            raise IdTokenError(
                f"{where}NoAuthorization carries no identity: it cannot be a token to present"
            )
        if not token.value or len(token.value) > limit:
            raise IdTokenError(
                f"{where}idToken {token.value!r}: OCPP {version} allows 1 to {limit} characters"
            )
        problem = format_problem(token.value, token_type)
        if problem is not None:
            raise IdTokenError(f"{where}idToken {token.value!r}: {problem}")
        result.append(IdToken(token.value, token_type if version != "1.6" else None, token.where))
    check_unique(result)
    return result


def check_unique(tokens: Iterable[IdToken]) -> None:
    """Raise :class:`IdTokenError` for the first token whose value (case insensitive, as
    the specs compare them) repeats an earlier one."""
    seen: dict[str, IdToken] = {}
    for token in tokens:
        key = token.value.upper()  # idTokens and idTags are case insensitive
        first = seen.setdefault(key, token)
        if first is not token:
            where = f"{token.where}: " if token.where else ""
            also = f" (also at {first.where})" if first.where else ""
            raise IdTokenError(f"{where}idToken {token.value!r} appears twice{also}")


# Odd multipliers modulo 2**bits are bijections: unique, deterministic values that look like
# real UIDs rather than counting up, so every worker of a run generates the same tokens.
_MIX = 0x9E3779B97F4A7C15


def _mixed(n: int, bits: int) -> int:
    return (n * _MIX) % (1 << bits)


def _base36(n: int, width: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = ""
    for _ in range(width):
        n, rest = divmod(n, 36)
        out = digits[rest] + out
    return out


def generate(count: int, token_type: str = DEFAULT_TYPE, start: int = 1) -> list[IdToken]:
    """``count`` distinct tokens well formed for ``token_type`` (also fine as 1.6 idTags):
    ISO14443 ``04`` + 12 hex digits (a 7 byte NXP UID), ISO15693 ``E0`` + 14, MacAddress a
    locally administered address, eMAID ``KRLGNC`` + 8, KeyCode 8 digits, Local / Central
    ``LOCAL-`` / ``CENTRAL-`` + 8 digits, a custom 2.1 type 20 hex digits (an identifierString
    whatever the type stands for)."""
    if token_type == "NoAuthorization":
        raise IdTokenError("NoAuthorization carries no identity: no tokens to generate")
    numbers = range(start, start + count)
    if token_type == "ISO14443":
        values = [f"04{_mixed(n, 48):012X}" for n in numbers]
    elif token_type == "ISO15693":
        values = [f"E0{_mixed(n, 56):014X}" for n in numbers]
    elif token_type == "MacAddress":
        values = [f"02{_mixed(n, 40):010X}" for n in numbers]
    elif token_type == "eMAID":
        values = [f"KRLGNC{_base36(n, 8)}" for n in numbers]
    elif token_type == "KeyCode":
        values = [f"{n:08d}" for n in numbers]
    elif token_type not in TYPES:
        values = [f"{_mixed(n, 80):020X}" for n in numbers]
    else:
        values = [f"{token_type.upper()}-{n:08d}" for n in numbers]
    return [IdToken(value, token_type) for value in values]
