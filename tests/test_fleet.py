"""Fleet files: the seed fleet, and errors that name the file, the line and the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loadgen import fleet as fleets
from loadgen import idtokens
from loadgen.fleet import Charger, FleetError
from loadgen.idtokens import IdToken

SITES = """\
[[sites]]
id = "north"
name = "North"
lat = 33.5
lon = 126.5

[[sites]]
id = "south"
lat = 33.25
lon = 126.56
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(FleetError) as caught:
        fleets.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}"), message  # names the file
    return message


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """The 1-based line of the ``occurrence``-th line starting with ``needle``."""
    numbers = [n for n, line in enumerate(text.splitlines(), 1) if line.startswith(needle)]
    return numbers[occurrence - 1]


# -- the seed fleet ----------------------------------------------------------------------


def test_seed_fleet_chargers() -> None:
    fleet = fleets.load(fleets.SEED_FLEET)
    assert sorted(fleet.chargers) == [
        "emart_jeju_01",
        "emart_jeju_02",
        "emart_jeju_03",
        "emart_shinjeju_01",
        "emart_shinjeju_02",
    ]
    for charger_id, charger in fleet.chargers.items():
        assert charger.id == charger_id
        assert charger.serial_number == f"SN-{charger_id}-001"
        assert (charger.vendor, charger.model, charger.firmware) == ("ABB", "ABB Terra 53", "1.0.0")
        assert charger.evse_count == 1 and charger.connectors_per_evse == 1
        assert charger.password is None
        if charger_id.startswith("emart_jeju_"):
            assert charger.site_id == "emart_jeju_main"
            assert charger.rated_power_w == 100_000
        else:
            assert charger.site_id == "emart_shinjeju"
            assert charger.rated_power_w == 50_000


def test_seed_fleet_sites_are_on_jeju() -> None:
    fleet = fleets.load(fleets.SEED_FLEET)
    assert set(fleet.sites) == {"emart_jeju_main", "emart_shinjeju"}
    for site in fleet.sites.values():
        assert 33.2 <= site.lat <= 33.6, site
        assert 126.1 <= site.lon <= 127.0, site
        assert site.name.startswith("E-Mart")
    assert fleet.site_of("emart_shinjeju_02") is fleet.sites["emart_shinjeju"]
    assert fleet.site_of("emart_jeju_01") is fleet.sites["emart_jeju_main"]
    assert fleet.site_of("nobody") is None


def test_parse_and_load_agree(tmp_path: Path) -> None:
    text = fleets.SEED_FLEET.read_text(encoding="utf-8")
    assert fleets.parse(text) == fleets.load(write(tmp_path, text))


def test_ids_list_start_defaults_and_passwords() -> None:
    fleet = fleets.parse(
        SITES
        + """
[defaults]
vendor = "Alpitronic"
evse_count = 2

[[chargers]]
site = "north"
ids = ["a-1", "b:2"]
rated_power_kw = 22.5
model = "HYC300"
password = "s3cret-pass"

[[chargers]]
site = "south"
pattern = "s{n:03d}"
start = 0
count = 2
rated_power_kw = 7
serial_pattern = "X/{id}"
connectors_per_evse = 2
"""
    )
    assert sorted(fleet.chargers) == ["a-1", "b:2", "s000", "s001"]
    a = fleet.chargers["a-1"]
    assert (a.vendor, a.model, a.evse_count, a.rated_power_w) == ("Alpitronic", "HYC300", 2, 22_500)
    assert a.password == "s3cret-pass"
    assert "s3cret-pass" not in repr(a)  # never shown in reprs (and so in logs)
    s = fleet.chargers["s001"]
    assert (s.site_id, s.serial_number, s.connectors_per_evse) == ("south", "X/s001", 2)
    assert fleet.sites["south"].name == "south"  # name defaults to the id


def test_charger_defaults() -> None:
    charger = Charger("x", "north", 1000.0)
    assert charger.serial_number == "" and charger.password is None


# -- bad fleet files ---------------------------------------------------------------------

CHARGER = """
[[chargers]]
site = "north"
pattern = "n{n}"
count = 2
rated_power_kw = 50
"""


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match=r"nope\.toml: cannot read fleet file"):
        fleets.load(tmp_path / "nope.toml")


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    text = SITES + CHARGER + "rated_power_kw = = 3\n"
    message = load_error(tmp_path, text)
    assert f"line {len(text.splitlines())}" in message


@pytest.mark.parametrize(
    ("field", "table", "replace", "expected"),
    [
        ("lat", "sites", ("lat = 33.5\n", ""), "missing field 'lat'"),
        ("id", "sites", ('id = "north"\n', ""), "missing field 'id'"),
        ("lon", "sites", ("lon = 126.5", 'lon = "east"'), "field 'lon' must be a number"),
        ("lat", "sites", ("lat = 33.5", "lat = 91"), "field 'lat' = 91 is out of range"),
        ("name", "sites", ('name = "North"', "name = 3"), "field 'name' must be a string"),
        ("rated_power_kw", "chargers", ("rated_power_kw = 50\n", ""),
         "missing field 'rated_power_kw'"),
        ("rated_power_kw", "chargers", ("rated_power_kw = 50", 'rated_power_kw = "50"'),
         "field 'rated_power_kw' must be a number"),
        ("rated_power_kw", "chargers", ("rated_power_kw = 50", "rated_power_kw = true"),
         "field 'rated_power_kw' must be a number"),
        ("rated_power_kw", "chargers", ("rated_power_kw = 50", "rated_power_kw = 0"),
         "out of range"),
        ("site", "chargers", ('site = "north"\n', ""), "missing field 'site'"),
        ("site", "chargers", ('site = "north"', 'site = "west"'),
         "field 'site': no [[sites]] entry with id 'west'"),
        ("count", "chargers", ("count = 2", "count = 2.5"), "field 'count' must be an integer"),
        ("count", "chargers", ("count = 2\n", ""), "missing field 'count'"),
        ("count", "chargers", ("count = 2", "count = 0"), "field 'count' must be an integer >= 1"),
        ("evse_count", "chargers", ("count = 2", 'count = 2\nevse_count = "1"'),
         "field 'evse_count' must be an integer"),
        ("vendor", "chargers", ("count = 2", "count = 2\nvendor = 7"),
         "field 'vendor' must be a non-empty string"),
        ("password", "chargers", ("count = 2", "count = 2\npassword = 1234"),
         "field 'password' must be a string"),
        ("pattern", "chargers", ('pattern = "n{n}"', 'pattern = "n"'),
         "field 'pattern': 'n' must use {n}"),
        ("pattern", "chargers", ('pattern = "n{n}"\ncount = 2', 'pattern = "solo"\ncount = 1'),
         "field 'pattern': 'solo' must use {n}"),
        ("pattern", "chargers", ('pattern = "n{n}"', 'pattern = "n{"'), "must use {n}"),
        ("pattern", "chargers", ('pattern = "n{n}"', 'pattern = "n{n[0]}"'), "must use {n}"),
        ("pattern", "chargers", ('pattern = "n{n}"', 'pattern = "n{n}{m}"'), "must use {n}"),
        ("serial_pattern", "chargers", ("count = 2", 'count = 2\nserial_pattern = "SN-{n}"'),
         "field 'serial_pattern': 'SN-{n}' may only use {id}"),
        ("pattern", "chargers", ('pattern = "n{n}"', 'pattern = "n{m}"'),
         "field 'pattern': 'n{m}' must use {n}"),
        ("pattern", "chargers", ('pattern = "n{n}"', 'pattern = "n{0}"'), "must use {n}"),
        ("pattern", "chargers", ('pattern = "n{n}"', 'pattern = "n/{n}"'),
         "is not an OCPP identifierString"),
        ("ids", "chargers", ('pattern = "n{n}"\ncount = 2', "ids = []"),
         "field 'ids' must be a non-empty list of strings"),
        ("ids", "chargers", ('pattern = "n{n}"\ncount = 2', 'ids = ["a", "a"]'),
         "duplicate charger id 'a'"),
        ("ids", "chargers", ('pattern = "n{n}"', 'pattern = "n{n}"\nids = ["x"]'),
         "give either 'ids' or 'pattern'"),
        ("ids", "chargers", ('pattern = "n{n}"\ncount = 2', ""), "needs 'ids' or 'pattern'"),
        ("ids", "chargers", ('pattern = "n{n}"\ncount = 2', f'ids = ["{"x" * 49}"]'),
         "is not an OCPP identifierString of <= 48 chars"),
        ("colour", "chargers", ("count = 2", 'count = 2\ncolour = "red"'),
         "unknown field(s): colour"),
        ("elevation", "sites", ("lon = 126.5", "lon = 126.5\nelevation = 20"),
         "unknown field(s): elevation"),
    ],
)  # fmt: skip
def test_bad_field_names_file_line_and_field(
    tmp_path: Path, field: str, table: str, replace: tuple[str, str], expected: str
) -> None:
    text = SITES + CHARGER
    if table == "sites":
        text = text.replace(*replace, 1)
        index, header = 0, "[[sites]]"
    else:
        head, _, tail = text.rpartition("[[chargers]]")
        text = head + "[[chargers]]" + tail.replace(*replace, 1)
        index, header = 0, "[[chargers]]"
    assert text != SITES + CHARGER
    message = load_error(tmp_path, text)
    line = line_of(text, header, index + 1)
    assert f"fleet.toml:{line}: {table}[{index}]: " in message
    assert expected in message
    assert field in message


def test_error_points_at_the_offending_table_not_the_first(tmp_path: Path) -> None:
    text = SITES + CHARGER + CHARGER.replace('"n{n}"', '"m{n}"').replace("= 50", '= "x"')
    message = load_error(tmp_path, text)
    assert f":{line_of(text, '[[chargers]]', 2)}: chargers[1]: " in message
    assert "rated_power_kw" in message


def test_duplicate_charger_id_across_tables(tmp_path: Path) -> None:
    text = SITES + CHARGER + CHARGER.replace('"north"', '"south"')
    message = load_error(tmp_path, text)
    assert f":{line_of(text, '[[chargers]]', 2)}: chargers[1]: " in message
    assert "duplicate charger id 'n1'" in message


def test_duplicate_site_id(tmp_path: Path) -> None:
    text = SITES.replace('id = "south"', 'id = "north"') + CHARGER
    message = load_error(tmp_path, text)
    assert f":{line_of(text, '[[sites]]', 2)}: sites[1]: " in message
    assert "field 'id': duplicate site id 'north'" in message


def test_unknown_default_field(tmp_path: Path) -> None:
    text = '[defaults]\nvendor = "ABB"\ncount = 3\n\n' + SITES + CHARGER
    message = load_error(tmp_path, text)
    assert re.search(r"fleet\.toml:1: defaults: unknown field\(s\): count", message), message


def test_defaults_apply_and_are_checked(tmp_path: Path) -> None:
    text = (
        '[defaults]\nrated_power_kw = "big"\n'
        + SITES
        + CHARGER.replace("rated_power_kw = 50\n", "")
    )
    message = load_error(tmp_path, text)
    assert "chargers[0]: field 'rated_power_kw' must be a number" in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    message = load_error(tmp_path, 'title = "x"\n' + SITES + CHARGER)
    assert "unknown top-level key(s): title" in message


def test_fleet_without_chargers(tmp_path: Path) -> None:
    message = load_error(tmp_path, SITES)
    assert "at least one [[chargers]] table" in message


def test_sites_must_be_an_array_of_tables(tmp_path: Path) -> None:
    message = load_error(tmp_path, 'sites = "north"\n' + CHARGER)
    assert "'sites' must be an array of tables" in message


def test_source_name_of_parse() -> None:
    with pytest.raises(FleetError, match=r"^<fleet>: "):
        fleets.parse("chargers = 3")
    with pytest.raises(FleetError, match=r"^inline\.toml:2: sites\[0\]: missing field 'lon'"):
        fleets.parse('\n[[sites]]\nid = "a"\nlat = 1\n' + CHARGER, "inline.toml")


def test_generated_fleet_spreads_chargers_over_sites() -> None:
    generated = fleets.generate(1000)
    assert len(generated.chargers) == 1000
    assert len(set(generated.chargers)) == 1000
    assert all(len(charger_id) <= 48 for charger_id in generated.chargers)
    by_site = {}
    for charger in generated.chargers.values():
        by_site[charger.site_id] = by_site.get(charger.site_id, 0) + 1
        assert charger.site_id in generated.sites
    assert len(by_site) == 5 and min(by_site.values()) == 200
    assert {c.rated_power_w for c in generated.chargers.values()} >= {50_000.0, 100_000.0}
    with pytest.raises(fleets.FleetError):
        fleets.generate(0)


# -- idTokens per site and per charger table -----------------------------------------------

TOKEN_FLEET = """\
[[sites]]
id = "north"
lat = 33.5
lon = 126.5
id_tokens = ["04A2B3C4D5E6F7", {value = "KRLGNC00000001", type = "emaid"}]

[[sites]]
id = "south"
lat = 33.25
lon = 126.56

[[chargers]]
site = "north"
ids = ["n1", "n2"]
rated_power_kw = 50

[[chargers]]
site = "north"
ids = ["vip"]
rated_power_kw = 50
id_tokens = [{value = "E004015012345678", type = "ISO15693"}, {value = "1234"}]

[[chargers]]
site = "south"
ids = ["s1"]
rated_power_kw = 50
"""


def test_id_tokens_of_sites_and_charger_tables(tmp_path: Path) -> None:
    fleet = fleets.load(write(tmp_path, TOKEN_FLEET))
    assert fleet.id_tokens == {
        "site:north": (IdToken("04A2B3C4D5E6F7"), IdToken("KRLGNC00000001", "eMAID")),
        "chargers:1": (IdToken("E004015012345678", "ISO15693"), IdToken("1234")),
    }
    groups = {charger.id: charger.token_group for charger in fleet.chargers.values()}
    # its table's tokens, else its site's, else the run's pool
    assert groups == {"n1": "site:north", "n2": "site:north", "vip": "chargers:1", "s1": ""}
    assert fleet.id_tokens["site:north"][1].where.startswith(f"{tmp_path / 'fleet.toml'}:1: ")


@pytest.mark.parametrize(
    "replace,table,index,expected",
    [
        (('id_tokens = [{value = "E0', 'id_tokens = [{value = "XX'), "chargers", 1,
         "field 'id_tokens'[0]: idToken 'XX04015012345678': an ISO15693 idToken is"),
        (('type = "emaid"', 'type = "RFID CARD"'), "sites", 0,
         "field 'id_tokens'[1]: unknown idToken type 'RFID CARD'"),
        (('{value = "1234"}', '{value = "1234", owner = "x"}'), "chargers", 1,
         "field 'id_tokens'[1]: unknown field(s): owner"),
        (('{value = "1234"}', "12"), "chargers", 1, "field 'id_tokens'[1]: a token is a string"),
        (('id_tokens = [{value = "E004015012345678", type = "ISO15693"}, {value = "1234"}]',
          "id_tokens = []"), "chargers", 1,
         "field 'id_tokens' must be a non-empty list"),
    ],
)  # fmt: skip
def test_bad_id_tokens_name_file_line_and_field(
    tmp_path: Path, replace: tuple[str, str], table: str, index: int, expected: str
) -> None:
    text = TOKEN_FLEET.replace(*replace, 1)
    assert text != TOKEN_FLEET
    message = load_error(tmp_path, text)
    line = line_of(text, f"[[{table}]]", index + 1)
    assert f"fleet.toml:{line}: {table}[{index}]: {expected}" in message, message


def test_a_custom_21_token_type_is_checked_against_the_runs_versions(tmp_path: Path) -> None:
    """The fleet does not know the run's versions: a custom type loads, and the run's
    check (:func:`loadgen.idtokens.check`) names its file, line and field."""
    text = TOKEN_FLEET.replace('{value = "1234"}', '{value = "WVWZZZ1JZXW000001", type = "VIN"}')
    fleet = fleets.load(write(tmp_path, text))
    tokens = fleet.id_tokens["chargers:1"]
    assert tokens[1] == IdToken("WVWZZZ1JZXW000001", "VIN")
    assert idtokens.check(tokens, "2.1", None) == list(tokens)
    with pytest.raises(idtokens.IdTokenError) as caught:
        idtokens.check(tokens, "2.0.1", None)
    line = line_of(text, "[[chargers]]", 2)
    assert str(caught.value).startswith(
        f"{tmp_path / 'fleet.toml'}:{line}: chargers[1] field 'id_tokens'[1]: "
        "unknown idToken type 'VIN' for OCPP 2.0.1"
    ), caught.value


def test_a_token_belongs_to_one_place_in_a_fleet(tmp_path: Path) -> None:
    text = TOKEN_FLEET.replace('{value = "1234"}', '"04a2b3c4d5e6f7"')
    message = load_error(tmp_path, text)
    assert "idToken '04a2b3c4d5e6f7' appears twice (also at" in message, message
    assert f":{line_of(text, '[[chargers]]', 2)}: chargers[1] field 'id_tokens'[1]" in message
    text = "[defaults]\nid_tokens = ['DEADBEEF']\n" + TOKEN_FLEET
    assert "defaults: unknown field(s): id_tokens" in load_error(tmp_path, text)


def test_a_charger_id_pattern_names_the_generated_fleet() -> None:
    generated = fleets.generate(12, pattern="CP{:06d}")
    assert list(generated.chargers)[:2] == ["CP000001", "CP000002"]
    assert list(fleets.generate(2, pattern="site-a-{n}").chargers) == ["site-a-1", "site-a-2"]
    for pattern, expected in (
        ("CP", "makes the same id for several chargers"),
        ("CP{:02d}-{x}", "does not format a charger number"),
        ("CP{:s}", "does not format a charger number"),
        ("a/{:06d}", "makes 'a/000001', not an OCPP identifierString"),
        ("X" * 45 + "{:04d}", "not an OCPP identifierString of <= 48 chars"),
    ):
        with pytest.raises(FleetError, match=re.escape(expected)):
            fleets.generate(12, pattern=pattern)
