"""Fleet files: the sites and chargers a run simulates (and ``csms_stub`` preloads).

A fleet is a TOML file (``tomllib`` is in the standard library)::

    [defaults]                 # optional, applies to every charger
    vendor = "ABB"
    model = "ABB Terra 53"
    firmware = "1.0.0"

    [[sites]]
    id = "emart_jeju_main"
    name = "E-Mart Jeju"
    lat = 33.5113
    lon = 126.5219

    [[chargers]]
    site = "emart_jeju_main"
    pattern = "emart_jeju_{n:02d}"   # or: ids = ["a", "b"]
    count = 3
    rated_power_kw = 100

Charger fields: ``site``, ``ids`` or ``pattern`` + ``count`` (+ ``start``, default 1),
``rated_power_kw``, ``evse_count`` (1), ``connectors_per_evse`` (1), ``vendor``, ``model``,
``firmware``, ``serial_pattern`` (``"SN-{id}-001"``), ``password`` (security profile 1),
``id_tokens``. Sites: ``id``, ``name``, ``lat``, ``lon``, ``id_tokens``.

``id_tokens`` lists the idTokens (RFID cards, eMAIDs, ...) used at a site's chargers, or at
the chargers of one ``[[chargers]]`` table: each a string (its type is the run's
``--id-token-type``, ISO14443 by default; a 1.6 run sends no type) or a table with
``value`` and ``type`` (an OCPP 2.0.1 IdTokenEnumType, or on a 2.1-only run any other
type of up to 20 characters, checked when the run's versions are known)::

    [[sites]]
    id = "emart_jeju_main"
    lat = 33.5113
    lon = 126.5219
    id_tokens = ["04A2B3C4D5E6F7", {value = "KRLGNC00000001", type = "eMAID"}]

A charger presents its table's tokens if it has any, else its site's, else the run's
(``--id-token-file``, or generated). A token appears once in a fleet; its format is
checked for its type (see :mod:`loadgen.idtokens`).
Errors name the file, the line of the offending table and the field.
"""

from __future__ import annotations

import re
import string
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen import idtokens

SEED_FLEET = Path(__file__).with_name("fleets") / "seed.toml"

_FORMATTER = string.Formatter()
#: a charger id is the last path segment of the WebSocket URL (identifierString[48])
_CHARGER_ID = re.compile(r"[A-Za-z0-9*\-_=:+|@.]+")

_CHARGER_FIELDS = {
    "site",
    "ids",
    "pattern",
    "count",
    "start",
    "rated_power_kw",
    "evse_count",
    "connectors_per_evse",
    "vendor",
    "model",
    "firmware",
    "serial_pattern",
    "password",
    "id_tokens",
}
_SITE_FIELDS = {"id", "name", "lat", "lon", "id_tokens"}
# Tokens in [defaults] would be every charger's: that is the run's pool (--id-token-file).
_DEFAULT_FIELDS = _CHARGER_FIELDS - {"site", "ids", "pattern", "count", "start", "id_tokens"}


class FleetError(ValueError):
    """A fleet file that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Site:
    id: str
    name: str
    lat: float
    lon: float


@dataclass(frozen=True)
class Charger:
    id: str
    site_id: str
    rated_power_w: float
    evse_count: int = 1
    connectors_per_evse: int = 1
    vendor: str = "ABB"
    model: str = "ABB Terra 53"
    firmware: str = "1.0.0"
    serial_number: str = ""
    #: Basic-auth password (security profile 1); never logged
    password: str | None = field(default=None, repr=False)
    #: the key of its tokens in :attr:`Fleet.id_tokens` ("": the run's pool)
    token_group: str = ""


@dataclass(frozen=True)
class Fleet:
    sites: dict[str, Site]
    chargers: dict[str, Charger]
    #: idTokens by group: ``site:<id>`` (a site's) and ``chargers:<n>`` (the n-th
    #: [[chargers]] table's, from 0); the run's pool is not here
    id_tokens: dict[str, tuple[idtokens.IdToken, ...]] = field(default_factory=dict)

    def site_of(self, charger_id: str) -> Site | None:
        charger = self.chargers.get(charger_id)
        return self.sites.get(charger.site_id) if charger else None


def load(path: str | Path) -> Fleet:
    """Read and check a fleet file; raises :class:`FleetError` with file, line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FleetError(f"{path}: cannot read fleet file: {exc.strerror}") from None
    return parse(text, str(path))


def parse(text: str, source: str = "<fleet>") -> Fleet:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FleetError(f"{source}: {exc}") from None
    lines = _table_lines(text)

    def fail(table: str, index: int | None, message: str) -> FleetError:
        line = lines.get((table, index))
        where = f"{source}:{line}" if line else source
        label = table if index is None else f"{table}[{index}]"
        return FleetError(f"{where}: {label}: {message}")

    unknown_top = set(document) - {"defaults", "sites", "chargers"}
    if unknown_top:
        raise FleetError(f"{source}: unknown top-level key(s): {', '.join(sorted(unknown_top))}")

    defaults = document.get("defaults", {})
    if not isinstance(defaults, dict):
        raise fail("defaults", None, "must be a table")
    _reject_unknown(defaults, _DEFAULT_FIELDS, lambda m: fail("defaults", None, m))

    sites: dict[str, Site] = {}
    tokens: dict[str, tuple[idtokens.IdToken, ...]] = {}
    raw_sites = document.get("sites", [])
    if not isinstance(raw_sites, list):
        raise FleetError(f"{source}: 'sites' must be an array of tables ([[sites]])")
    for index, raw in enumerate(raw_sites):

        def site_fail(message: str, index: int = index) -> FleetError:
            return fail("sites", index, message)

        _reject_unknown(raw, _SITE_FIELDS, site_fail)
        site_id = _string(raw, "id", site_fail)
        lat = _number(raw, "lat", site_fail, low=-90, high=90)
        lon = _number(raw, "lon", site_fail, low=-180, high=180)
        name = raw.get("name", site_id)
        if not isinstance(name, str):
            raise site_fail("field 'name' must be a string")
        if site_id in sites:
            raise site_fail(f"field 'id': duplicate site id {site_id!r}")
        sites[site_id] = Site(site_id, name, lat, lon)
        if "id_tokens" in raw:
            where = f"{source}:{lines.get(('sites', index), '?')}: sites[{index}]"
            tokens[f"site:{site_id}"] = _id_tokens(raw["id_tokens"], where, site_fail)

    chargers: dict[str, Charger] = {}
    raw_chargers = document.get("chargers", [])
    if not isinstance(raw_chargers, list) or not raw_chargers:
        raise FleetError(f"{source}: a fleet needs at least one [[chargers]] table")
    for index, raw in enumerate(raw_chargers):

        def charger_fail(message: str, index: int = index) -> FleetError:
            return fail("chargers", index, message)

        _reject_unknown(raw, _CHARGER_FIELDS, charger_fail)
        merged = {**defaults, **raw}
        site_id = _string(merged, "site", charger_fail)
        if site_id not in sites:
            raise charger_fail(f"field 'site': no [[sites]] entry with id {site_id!r}")
        id_field = "ids" if "ids" in merged else "pattern"
        group = f"site:{site_id}" if f"site:{site_id}" in tokens else ""
        if "id_tokens" in raw:
            where = f"{source}:{lines.get(('chargers', index), '?')}: chargers[{index}]"
            group = f"chargers:{index}"
            tokens[group] = _id_tokens(raw["id_tokens"], where, charger_fail)
        for charger_id in _charger_ids(merged, charger_fail):
            if charger_id in chargers:
                raise charger_fail(f"field '{id_field}': duplicate charger id {charger_id!r}")
            serial_pattern = merged.get("serial_pattern", "SN-{id}-001")
            try:
                serial_number = str(serial_pattern).format(id=charger_id)
            except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
                raise charger_fail(
                    f"field 'serial_pattern': {serial_pattern!r} may only use {{id}} ({exc})"
                ) from None
            password = merged.get("password")
            if password is not None and not isinstance(password, str):
                raise charger_fail("field 'password' must be a string")
            chargers[charger_id] = Charger(
                id=charger_id,
                site_id=site_id,
                rated_power_w=_number(merged, "rated_power_kw", charger_fail, low=0.001) * 1000,
                evse_count=_integer(merged, "evse_count", charger_fail, default=1),
                connectors_per_evse=_integer(
                    merged, "connectors_per_evse", charger_fail, default=1
                ),
                vendor=_string(merged, "vendor", charger_fail, default="ABB"),
                model=_string(merged, "model", charger_fail, default="ABB Terra 53"),
                firmware=_string(merged, "firmware", charger_fail, default="1.0.0"),
                serial_number=serial_number,
                password=password,
                token_group=group,
            )
    try:
        # one owner per token across the fleet, as in a token file
        idtokens.check_unique([token for group in tokens.values() for token in group])
    except idtokens.IdTokenError as exc:
        raise FleetError(str(exc)) from None
    return Fleet(sites, chargers, tokens)


def _id_tokens(raw: Any, where: str, fail: Any) -> tuple[idtokens.IdToken, ...]:
    """A site's or charger table's ``id_tokens``: strings, or tables of value and type."""
    if not isinstance(raw, list) or not raw:
        raise fail("field 'id_tokens' must be a non-empty list of tokens")
    result = []
    for n, entry in enumerate(raw):
        label = f"field 'id_tokens'[{n}]"
        if isinstance(entry, dict):
            unknown = set(entry) - {"value", "type"}
            if unknown:
                raise fail(f"{label}: unknown field(s): {', '.join(sorted(unknown))}")
            value, token_type = entry.get("value"), entry.get("type")
            if not isinstance(token_type, str | None):
                raise fail(f"{label}: 'type' must be a string")
        else:
            value, token_type = entry, None
        if not isinstance(value, str):
            raise fail(f"{label}: a token is a string or a table {{value = ..., type = ...}}")
        try:
            token = idtokens.IdToken(
                value.strip(),
                idtokens.normalise_type(token_type) if token_type is not None else None,
                f"{where} {label}",
            )
        except idtokens.IdTokenError as exc:
            raise fail(f"{label}: {exc}") from None
        problem = idtokens.format_problem(token.value, token.type) if token.type else None
        if problem is not None:
            raise fail(f"{label}: idToken {token.value!r}: {problem}")
        result.append(token)
    return tuple(result)


def _charger_ids(raw: dict[str, Any], fail: Any) -> list[str]:
    if "ids" in raw:
        if "pattern" in raw:
            raise fail("give either 'ids' or 'pattern', not both")
        ids = raw["ids"]
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
            raise fail("field 'ids' must be a non-empty list of strings")
        result = ids
    elif "pattern" in raw:
        pattern = _string(raw, "pattern", fail)
        count = _integer(raw, "count", fail)
        start = _integer(raw, "start", fail, default=1, low=0)
        try:
            fields = {re.split(r"[.\[]", name)[0] for _, name, _, _ in _FORMATTER.parse(pattern)
                      if name is not None}  # fmt: skip
        except ValueError as exc:
            raise fail(f"field 'pattern': {pattern!r} must use {{n}} ({exc})") from None
        if "n" not in fields:
            # Without {n} every charger gets the same id (a lone one would slip through).
            raise fail(f"field 'pattern': {pattern!r} must use {{n}}")
        try:
            result = [pattern.format(n=n) for n in range(start, start + count)]
        except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
            raise fail(f"field 'pattern': {pattern!r} must use {{n}} ({exc})") from None
        if len(set(result)) != len(result):
            raise fail(f"field 'pattern': {pattern!r} does not make distinct ids")
    else:
        raise fail("needs 'ids' or 'pattern' with 'count'")
    id_field = "ids" if "ids" in raw else "pattern"
    for charger_id in result:
        # The id is the last path segment of the WebSocket URL (identifierString[48]).
        if len(charger_id) > 48 or not _CHARGER_ID.fullmatch(charger_id):
            raise fail(
                f"field '{id_field}': charger id {charger_id!r} is not an OCPP "
                "identifierString of <= 48 chars"
            )
    return result


def _reject_unknown(raw: Any, allowed: set[str], fail: Any) -> None:
    if not isinstance(raw, dict):
        raise fail("must be a table")
    unknown = set(raw) - allowed
    if unknown:
        raise fail(f"unknown field(s): {', '.join(sorted(unknown))}")


_MISSING = object()


def _string(raw: dict[str, Any], key: str, fail: Any, default: Any = _MISSING) -> str:
    value = raw.get(key, default)
    if value is _MISSING:
        raise fail(f"missing field '{key}'")
    if not isinstance(value, str) or not value:
        raise fail(f"field '{key}' must be a non-empty string")
    return value


def _number(
    raw: dict[str, Any], key: str, fail: Any, low: float | None = None, high: float | None = None
) -> float:
    if key not in raw:
        raise fail(f"missing field '{key}'")
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(f"field '{key}' must be a number")
    if (low is not None and value < low) or (high is not None and value > high):
        raise fail(f"field '{key}' = {value} is out of range [{low}, {high}]")
    return float(value)


def _integer(
    raw: dict[str, Any], key: str, fail: Any, default: Any = _MISSING, low: int = 1
) -> int:
    value = raw.get(key, default)
    if value is _MISSING:
        raise fail(f"missing field '{key}'")
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise fail(f"field '{key}' must be an integer >= {low}")
    return value


def _table_lines(text: str) -> dict[tuple[str, int | None], int]:
    """Line numbers of the ``[[sites]]``, ``[[chargers]]`` and ``[defaults]`` headers."""
    lines: dict[tuple[str, int | None], int] = {}
    counts: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = re.match(r"\s*\[\[\s*(sites|chargers)\s*\]\]", line)
        if match:
            name = match.group(1)
            index = counts.get(name, 0)
            counts[name] = index + 1
            lines[(name, index)] = number
        elif re.match(r"\s*\[\s*defaults\s*\]", line):
            lines[("defaults", None)] = number
    return lines


#: sites for generated fleets: the seed's two on Jeju and a few more across Korea
_GENERATED_SITES = (
    Site("emart_jeju_main", "E-Mart Jeju", 33.5115, 126.5220),
    Site("emart_shinjeju", "E-Mart Shinjeju", 33.4872, 126.4896),
    Site("seoul_yeouido", "Seoul Yeouido", 37.5219, 126.9245),
    Site("busan_haeundae", "Busan Haeundae", 35.1631, 129.1636),
    Site("daejeon_dunsan", "Daejeon Dunsan", 36.3518, 127.3787),
)
_GENERATED_RATINGS_W = (50_000.0, 100_000.0, 150_000.0, 22_000.0)


def generate(
    count: int,
    prefix: str = "CP",
    sites: int = len(_GENERATED_SITES),
    pattern: str | None = None,
) -> Fleet:
    """A fleet of ``count`` chargers ``<prefix>000001`` ... spread over a few sites, with a
    mix of ratings: what a load test uses when no fleet file is given.

    ``pattern`` names them instead: a format string given the charger's number (from 1)
    positionally and as ``n``, e.g. ``CP{:06d}`` or ``site-a-{n}``; every id it makes must
    be distinct and fit the WebSocket URL (an OCPP identifierString of at most 48 chars)."""
    if count < 1:
        raise FleetError("a generated fleet needs at least one charger")
    if not 1 <= sites <= len(_GENERATED_SITES):
        raise FleetError(f"a generated fleet has 1 to {len(_GENERATED_SITES)} sites")
    chosen = _GENERATED_SITES[:sites]
    width = max(6, len(str(count)))
    ids = _pattern_ids(pattern, count) if pattern is not None else None
    chargers = {}
    for n in range(1, count + 1):
        charger_id = ids[n - 1] if ids is not None else f"{prefix}{n:0{width}d}"
        chargers[charger_id] = Charger(
            id=charger_id,
            site_id=chosen[n % sites].id,
            rated_power_w=_GENERATED_RATINGS_W[n % len(_GENERATED_RATINGS_W)],
            serial_number=f"SN-{charger_id}-001",
        )
    return Fleet({site.id: site for site in chosen}, chargers)


def _pattern_ids(pattern: str, count: int) -> list[str]:
    """The ids a charger id pattern makes for chargers 1..count, or :class:`FleetError`."""
    try:
        ids = [pattern.format(n, n=n) for n in range(1, count + 1)]
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
        raise FleetError(
            f"charger id pattern {pattern!r} does not format a charger number "
            f"(write e.g. CP{{:06d}}): {exc}"
        ) from None
    if len(set(ids)) != len(ids):
        raise FleetError(
            f"charger id pattern {pattern!r} makes the same id for several chargers "
            f"({ids[0]!r} ...): use the number, e.g. CP{{:06d}}"
        )
    for charger_id in ids:
        if len(charger_id) > 48 or not _CHARGER_ID.fullmatch(charger_id):
            raise FleetError(
                f"charger id pattern {pattern!r} makes {charger_id!r}, not an OCPP "
                "identifierString of <= 48 chars (letters, digits, *-_=:+|@.; no '/')"
            )
    return ids
