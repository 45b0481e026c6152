"""The entity message is the API's contract: its proto3 JSON (proto field names) goes in through
the SQL PostgREST runs and comes back as JSON that parses into an equal message, on the real
PostgreSQL, as the role the API uses. testdata/wire/wire.proto has every field shape.

Bindings: protobuf's own json_format here; protobuf-es 2.x under Node in test_wire_node.py.
"""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

from protoc_gen_crud.relay.events import RESERVED
from protoc_gen_crud.resources import proto_include_dir

from . import postgrest_sql as rest
from .support import ROOT, protoc, read_tree

WIRE = ROOT / "testdata" / "wire"
ROLE, CLAIMS = "authenticated", {"sub": "alice", "role": "authenticated"}
# What a binding adds beside the message's own fields: nothing is lost but these.
ADDED = ("created_at", "updated_at")


def descriptor_set(out: Path) -> Path:
    """wire.proto and its imports as a FileDescriptorSet, as `buf build` would write it."""
    target = out / "wire.binpb"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_include_dir()}",
                    f"-I{WIRE}", "--include_imports", f"--descriptor_set_out={target}",
                    "wire.proto"], check=True, cwd=WIRE)
    return target


@pytest.fixture(scope="module")
def wire(tmp_path_factory):
    out = tmp_path_factory.mktemp("wire")
    done = protoc(WIRE / "wire.proto", out / "gen", parameter="target=postgres,target=relay")
    assert done.returncode == 0, done.stderr
    files = read_tree(out / "gen")
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set(out).read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in fds.file:
        pool.Add(file)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("wire.v1.Everything"))
    return files, cls, out


def messages(cls) -> list:
    """Every shape with ordinary, zero and extreme values."""
    full = cls()
    json_format.ParseDict({
        "id": "7d6f0c56-0b3e-4c1e-9a57-2f4f0a6c8b11",
        "text": "héllo \"quoted\" \\ text",
        "i32": -2147483648, "i64": "-9223372036854775808", "u32": 4294967295,
        "u64": "18446744073709551615", "s64": "9223372036854775807",
        "f64": "9007199254740993", "flag": True, "dbl": 0.1, "flt": 1.5,
        "data": base64.b64encode(bytes(range(256))).decode(),
        "level": "LEVEL_HIGH", "at": "2026-11-30T23:59:58.123456Z", "took": "-3.500s",
        "attrs": {"a": 1, "b": [True, None, "x"], "c": {"d": 2.5}},
        "anything": [1, "two", {"three": 3}],
        "maybe_i64": "9007199254740993", "maybe_text": "", "maybe_flag": False,
        "maybe_data": "",
        "opt_i32": 0, "opt_text": "", "opt_level": "LEVEL_UNSPECIFIED",
        "tags": ["a", "b,c", "{d}", "\"e\""], "big_numbers": ["9007199254740993", "-1", "0"],
        "blobs": ["AA==", "", "/+8="], "levels": ["LEVEL_LOW", "LEVEL_UNSPECIFIED"],
        "scores": [1.25, -2.0, 1e300],
        "parts": [{"name": "p", "count": "9007199254740993", "level": "LEVEL_LOW"}, {}],
        "counts": {"x": "1", "y": "-9007199254740993"},
        "main_part": {"name": "main", "count": "0"},
        "amount": "123456789.125",
        "due": {"year": 2026, "month": 2, "day": 3},
        "opens": {"hours": 13, "minutes": 5, "seconds": 7, "nanos": 123456000},
    }, full)
    zero = cls()
    zero.anything.null_value = 0  # a Value field reads back as null when it was null
    zero.opt_i32 = 0  # presence kept: 0, not absent
    durations = cls()
    durations.took.FromJsonString("1s")
    durations.anything.string_value = "s"
    durations.main_part.SetInParent()  # an empty message, present
    durations.at.FromJsonString("1970-01-01T00:00:00Z")
    durations.due.year, durations.due.month, durations.due.day = 1, 1, 1  # the first date
    durations.opens.SetInParent()  # midnight: every field zero, the message present
    micro = cls()
    micro.took.FromJsonString("0.000001s")
    micro.anything.number_value = 3
    micro.dbl = float("inf")
    micro.due.year, micro.due.month, micro.due.day = 9999, 12, 31  # the last date
    micro.opens.hours, micro.opens.minutes, micro.opens.seconds = 23, 59, 59
    micro.opens.nanos = 999999000
    return [full, zero, durations, micro]


def proto_json(message) -> dict:
    """What a binding sends: canonical proto3 JSON with proto field names."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def parse(cls, row: dict):
    """What a binding reads back; only the added audit fields are unknown to the message."""
    assert set(row) - set(cls.DESCRIPTOR.fields_by_name) == set(ADDED)
    parsed = cls()
    json_format.ParseDict({k: v for k, v in row.items() if k not in ADDED}, parsed)
    return parsed


def differences(a, b) -> dict:
    """The fields two messages disagree on, in proto JSON (for a readable failure)."""
    found = {}
    for f in a.DESCRIPTOR.fields:
        left, right = getattr(a, f.name), getattr(b, f.name)
        presence = f.has_presence and a.HasField(f.name) != b.HasField(f.name)
        if presence or str(left) != str(right) or repr(left) != repr(right):
            found[f.name] = (repr(left), repr(right))
    return found


def typed(value: object) -> object:
    """A JSON value with each scalar's JSON type made part of it, so that comparing two of them
    is strict: "1", 1, 1.0 and true differ (Python's == and a lenient parser take them alike),
    as they do for a binding that reads an int64 as a string or a client that compares text."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


def same(cls, row: dict, expected) -> None:
    parsed = parse(cls, row)
    assert parsed == expected, differences(parsed, expected)


def run(conn, sql_params) -> list[dict]:
    """One request as PostgREST runs it (the role's settings, role and claims), committed;
    the JSON body."""
    sql, params = sql_params
    settings = rest.role_settings(conn)
    with conn.transaction():
        rest.begin_request(conn, ROLE, CLAIMS, settings)
        (body,) = conn.execute(sql, params).fetchone()
    return json.loads(body)


@pytest.fixture
def api(wire, database, tmp_path):
    files, cls, _ = wire
    done = database.migrate(files, tmp_path)
    assert done.returncode == 0, done.stderr
    with database.connect() as conn:
        yield conn, rest.shape(conn, "wire", "everything"), cls


def test_messages_round_trip_through_post_get_patch_put(api):
    conn, table, cls = api
    for original in messages(cls):
        body = proto_json(original)
        (created,) = run(conn, rest.insert(table, body))
        if not original.id:
            original.id = created["id"]  # generated by the database, as the API documents
        same(cls, created, original)
        (read,) = run(conn, rest.select(table, "id", original.id))
        same(cls, read, original)
        # PATCH with the whole message, then with one field at its zero value given.
        (patched,) = run(conn, rest.update(table, proto_json(original), "id", original.id))
        same(cls, patched, original)
        changed = cls()
        changed.CopyFrom(original)
        changed.i64, changed.level = 0, 0
        zeroed = json_format.MessageToDict(changed, preserving_proto_field_name=True,
                                           always_print_fields_with_no_presence=True)
        (patched,) = run(conn, rest.update(table, zeroed, "id", original.id))
        same(cls, patched, changed)
        # PUT replaces: a binding sends every field (see the README's serializer options).
        (put,) = run(conn, rest.upsert(table, zeroed, "id"))
        same(cls, put, changed)


def test_bulk_insert_of_messages(api):
    """Messages as a binding writes them each leave out different fields: a bulk insert names
    the columns (?columns=) and asks for defaults (Prefer: missing=default)."""
    conn, table, cls = api
    batch = [proto_json(m) for m in messages(cls)[1:]]
    assert len({tuple(sorted(row)) for row in batch}) > 1
    with pytest.raises(ValueError, match="PGRST102"):
        rest.insert(table, batch)
    fields = [f.name for f in cls.DESCRIPTOR.fields]
    created = run(conn, rest.insert(table, batch, columns=fields, missing_default=True))
    assert len(created) == len(batch)
    for sent, row in zip(messages(cls)[1:], created, strict=True):
        expected = cls()
        expected.CopyFrom(sent)
        expected.id = row["id"]
        same(cls, row, expected)


def test_rows_written_by_sql_parse(api):
    """A row made in SQL (a migration, a trigger, psql) reads as a valid message too."""
    conn, table, cls = api
    conn.execute("""
        INSERT INTO wire.everything (text, i64, u64, data, level, took, big_numbers, blobs,
                                     amount, at, counts, due, opens)
        VALUES ('sql', 42, 18446744073709551615, '\\x00ff', 'LEVEL_LOW', interval '1 day 2 hours',
                '{1,2}', ARRAY['\\x01'::bytea], 1.5, '2026-01-01 00:00:00+00', '{"k": "3"}',
                '2026-02-03', '24:00:00')
    """)
    conn.commit()
    (row,) = run(conn, rest.select(table, "text", "sql"))
    message = parse(cls, row)
    assert message.i64 == 42 and message.u64 == 2**64 - 1
    assert message.data == b"\x00\xff" and list(message.blobs) == [b"\x01"]
    assert message.took.ToTimedelta().total_seconds() == 26 * 3600
    assert message.level == 1 and list(message.big_numbers) == [1, 2]
    assert message.amount == "1.500" and message.counts == {"k": 3}
    assert (message.due.year, message.due.month, message.due.day) == (2026, 2, 3)
    assert message.opens.hours == 24  # the end of a day, which a time column can hold
    # Strings for the 64-bit kinds, as JavaScript bindings need them; messages for dates.
    assert row["i64"] == "42" and row["big_numbers"] == ["1", "2"] and row["took"] == "93600s"
    assert row["due"] == {"year": 2026, "month": 2, "day": 3} and row["opens"] == {"hours": 24}


def test_a_message_with_only_zero_values_can_be_created(api):
    """proto3 JSON omits zero values; the columns' defaults are those zero values."""
    conn, table, cls = api
    (created,) = run(conn, rest.insert(table, proto_json(cls())))  # {}
    message = parse(cls, created)
    expected = cls(id=created["id"])
    expected.anything.null_value = 0  # an unset Value reads back as null (the column's NULL)
    assert message == expected, differences(message, expected)


@pytest.mark.parametrize("body, error", [
    ({"i64": "1.5"}, "invalid int64 value"),
    ({"i64": "x"}, "invalid input syntax"),
    ({"data": 5}, "invalid bytes value"),
    ({"took": "3 parsecs"}, "invalid duration value"),
    ({"took": "315576000001s"}, "duration_range"),  # beyond Duration's +-10,000 years
    ({"level": "LOW"}, "everything_level_enum"),
    ({"levels": ["LEVEL_LOW", "NOPE"]}, "everything_levels_enum"),  # each element a name
    ({"i64": "9223372036854775808"}, "out of range"),
    ({"u64": "-1"}, "everything_u64_min"),  # no binding parses a negative uint64
    ({"u32": 4294967296}, "everything_u32_max"),
    # A date column holds whole dates: a partial google.type.Date is refused, not guessed.
    ({"due": {"year": 2026, "month": 2}}, "a partial date cannot be stored"),
    ({"due": {"month": 2, "day": 3}}, "a partial date cannot be stored"),
    ({"due": {"year": 2026, "month": 2, "day": 30}}, "date field value out of range"),
    ({"due": {"year": 10000, "month": 1, "day": 1}}, "the year must be 1 to 9999"),
    ({"due": "infinity"}, "calendar_date_range"),
    ({"due": {"year": 2026, "month": 2, "day": 3, "hour": 1}}, 'unknown field "hour"'),
    ({"opens": {"hours": 25}}, "invalid google.type.TimeOfDay value"),
    ({"opens": {"hours": 24, "minutes": 1}}, "invalid google.type.TimeOfDay value"),
    ({"opens": {"hours": 1.5}}, "hours must be an integer"),
])
def test_invalid_values_are_refused_by_the_database(api, body, error):
    conn, table, _ = api
    with pytest.raises(psycopg.Error) as refused:
        run(conn, rest.insert(table, body))
    assert error in str(refused.value)
    conn.rollback()


def test_camel_case_keys_are_refused_not_dropped(api):
    """protobuf's default JSON names (lowerCamelCase) are not columns: PostgREST refuses the
    request with PGRST204 (Plan.hs:955) instead of dropping the field."""
    _, table, cls = api
    original = messages(cls)[0]
    camel = json_format.MessageToDict(original)  # the default: json_name
    assert "maybeI64" in camel
    with pytest.raises(rest.ColumnNotFound, match="'bigNumbers' column of 'everything'"):
        rest.insert(table, camel)


def test_filters_take_the_text_and_the_message_forms(api):
    """A query-string filter reaches a wire domain as text (PostgREST calls the text -> domain
    cast): a date or time of day is matched in PostgreSQL's form or as the message's JSON."""
    conn, table, cls = api
    original = messages(cls)[0]
    run(conn, rest.insert(table, proto_json(original)))
    run(conn, rest.insert(table, proto_json(messages(cls)[2])))  # another date and time
    assert table.text_parsers["due"] == "crud_meta.calendar_date_from_text"
    for key, value in [("due", "2026-02-03"), ("due", '{"year":2026,"month":2,"day":3}'),
                       ("opens", "13:05:07.123456"), ("opens", '{"hours":13,"minutes":5,'
                                                        '"seconds":7,"nanos":123456000}'),
                       ("i64", "-9223372036854775808"), ("took", "-3.5s")]:
        rows = run(conn, rest.select(table, key, value))
        assert [row["id"] for row in rows] == [original.id], (key, value)
    assert run(conn, rest.select(table, "due", "2026-02-04")) == []


def test_a_bytes_filter_survives_url_decoding(api):
    """`?data=eq.<base64>`: the query string is URL-decoded before PostgREST hands the value
    to the domain's text cast, so base64's "+" arrives as a space; it still matches."""
    conn, table, cls = api
    original = messages(cls)[0]
    original.data = bytes([0xfb, 0xef, 0xbe, 0x01])  # base64 "++++AQ=="
    run(conn, rest.insert(table, proto_json(original)))
    decoded = base64.b64encode(original.data).decode().replace("+", " ")
    assert " " in decoded
    rows = run(conn, rest.select(table, "data", decoded))
    assert [row["id"] for row in rows] == [original.id]


def test_timestamps_leave_in_utc_whatever_the_time_zone(api, wire, database, tmp_path):
    """In a database whose TimeZone is not UTC, PostgreSQL writes an 1890 instant with the
    zone's local mean time (Asia/Kolkata: +05:21:10), which no binding parses. The API's roles
    pin TimeZone to UTC, and PostgREST applies a role's settings in each request; the relay
    writes UTC whatever its session's zone."""
    _, _, cls = api
    database.query(f'ALTER DATABASE "{database.name}" SET timezone = \'Asia/Kolkata\'')
    original = cls()
    original.at.FromJsonString("1890-01-01T00:00:00Z")
    original.anything.null_value = 0  # an unset Value reads back as null
    database.query("SELECT pg_create_logical_replication_slot('wire_zone', 'pgoutput')")
    with database.connect() as conn:  # a new session: the database's zone
        assert conn.execute("SHOW timezone").fetchone() == ("Asia/Kolkata",)
        conn.commit()
        table = rest.shape(conn, "wire", "everything")
        (created,) = run(conn, rest.insert(table, proto_json(original)))
        original.id = created["id"]
        (read,) = run(conn, rest.select(table, "id", original.id))
        for row in (created, read):
            assert row["at"] == "1890-01-01T00:00:00+00:00"
            assert row["created_at"].endswith("+00:00")
            same(cls, row, original)
        # What the pin prevents: the same request without the role's settings.
        with conn.transaction():
            rest.begin_request(conn, ROLE, CLAIMS, {})
            (body,) = conn.execute(*rest.select(table, "id", original.id)).fetchone()
        (unpinned,) = json.loads(body)
        assert unpinned["at"] == "1890-01-01T05:21:10+05:21:10"
        with pytest.raises(json_format.ParseError):
            parse(cls, unpinned)
    # The relay's event, decoded from pgoutput's text in a session of that zone.
    (event,) = change_events(database, wire[0], "wire_zone", tmp_path)
    assert event["at"] == "1890-01-01T00:00:00+00:00"
    assert typed({k: v for k, v in event.items() if k not in RESERVED}) == typed(created)
    # PostgREST's own session (a login as the authenticator) is in UTC from the start.
    with psycopg.connect(database.server.dsn(database.name, user="authenticator")) as login:
        assert login.execute("SHOW timezone").fetchone() == ("UTC",)


def test_rows_match_the_openapi_schema(api, wire, tmp_path):
    """The generated OpenAPI document's row schema is the wire form: each row the API returns
    for the messages validates against it (JSON Schema 2020-12, as OpenAPI 3.1 uses), and a
    row in PostgreSQL's own date form would not."""
    import jsonschema

    conn, table, cls = api
    done = protoc(WIRE / "wire.proto", tmp_path / "openapi", parameter="target=openapi")
    assert done.returncode == 0, done.stderr
    document = json.loads((tmp_path / "openapi" / "openapi" / "openapi.json").read_text())
    schema = document["components"]["schemas"]["Everything"]
    validator = jsonschema.Draft202012Validator(schema)
    for message in messages(cls):
        # Not yet described: a double's proto3 JSON may be "Infinity", "-Infinity" or "NaN".
        message.dbl = 0.0 if math.isinf(message.dbl) else message.dbl
        (row,) = run(conn, rest.insert(table, proto_json(message)))
        assert not list(validator.iter_errors(row)), row
    assert list(validator.iter_errors({**row, "due": "2026-02-03"}))
    assert list(validator.iter_errors({**row, "due": {"year": 2026, "month": 2}}))


def test_both_front_doors_give_the_same_wire_backend(wire):
    """wire.textproto spells out what wire.proto's descriptors imply."""
    from .support import from_textproto

    files, _, _ = wire
    config = from_textproto(WIRE / "wire.textproto", ["postgres", "relay"])
    assert config == files


def change_events(database, files: dict[str, str], slot: str, tmp_path: Path) -> list[dict]:
    """The relay's event data for what the slot has seen (dropping it): real pgoutput from
    the generated publication, decoded as crud-relay does, in a session of the database's
    own settings."""
    from protoc_gen_crud.relay import pgoutput
    from protoc_gen_crud.relay.events import change_data
    from protoc_gen_crud.relay.service import Config

    config_path = tmp_path / "relay.json"
    config_path.write_text(files["relay/relay.json"])
    config = Config.load(config_path, "", "")
    table = config.tables[("wire", "everything")]
    try:
        rows = database.query(
            f"SELECT data FROM pg_logical_slot_get_binary_changes('{slot}', NULL, NULL, "
            f"'proto_version', '1', 'publication_names', '{config.publication}')")
    finally:
        database.query(f"SELECT pg_drop_replication_slot('{slot}')")
    decoded = [pgoutput.decode(bytes(data)) for (data,) in rows]
    relation = next(m for m in decoded if isinstance(m, pgoutput.Relation))
    return [change_data(relation, m, table, 0, 0)
            for m in decoded if isinstance(m, pgoutput.Change)]


def test_change_events_carry_the_same_json(wire, database, tmp_path):
    """The relay's `row`/`old` values (SSE events, Dapr CloudEvents' data) parse into the
    message too: real pgoutput from the generated publication, decoded as crud-relay does."""
    files, cls, _ = wire
    assert database.migrate(files, tmp_path).returncode == 0
    database.query("SELECT pg_create_logical_replication_slot('wire_test', 'pgoutput')")
    with database.connect() as conn:
        shape = rest.shape(conn, "wire", "everything")
        sent, api_rows = messages(cls), []
        for message in sent:
            (created,) = run(conn, rest.insert(shape, proto_json(message)))
            message.id = created["id"]
            api_rows.append(created)
        changed = cls()
        changed.CopyFrom(sent[0])
        changed.took.FromJsonString("0.250s")
        changed.data = b"\x00"
        (updated,) = run(conn, rest.update(shape, {"took": "0.250s", "data": "AA=="}, "id",
                                           changed.id))
        api_rows.append(updated)
    events = change_events(database, files, "wire_test", tmp_path)
    assert [e["action"] for e in events] == ["I"] * len(sent) + ["U"]
    for event, expected in zip(events, [*sent, changed], strict=True):
        row = {k: v for k, v in event.items() if k not in RESERVED}
        same(cls, json.loads(json.dumps(row)), expected)
    # The form itself, not only what a lenient parser accepts (json_format takes an int64 as
    # a number too): the API's JSON for the same row, every value of the same JSON type and
    # equal, the audit timestamps included.
    for event, api_row in zip(events, api_rows, strict=True):
        row = {k: v for k, v in event.items() if k not in RESERVED}
        assert typed(json.loads(json.dumps(row))) == typed(api_row)
    assert typed(json.loads(json.dumps(events[-1]["old"]))) == typed(api_rows[0])
    first = events[0]
    assert first["i64"] == "-9223372036854775808" and first["big_numbers"][0] == \
        "9007199254740993"
    assert first["took"] == "-3.500s" and first["blobs"] == ["AA==", "", "/+8="]
    assert first["due"] == {"year": 2026, "month": 2, "day": 3}
    assert first["opens"] == {"hours": 13, "minutes": 5, "seconds": 7, "nanos": 123456000}
    # An update carries the old row too (REPLICA IDENTITY FULL), in the same form.
    same(cls, json.loads(json.dumps(events[-1]["old"])), sent[0])
    assert events[-1]["old"]["took"] == "-3.500s" and events[-1]["took"] == "0.250s"


NODE_DIR = ROOT / "tests" / "node"


def protobuf_es(wire_out: Path, request: dict):
    """One request to tests/node/wire.mjs (protobuf-es 2.x under Node)."""
    done = subprocess.run(
        ["node", str(NODE_DIR / "wire.mjs"), str(wire_out / "wire.binpb"), "wire.v1.Everything"],
        input=json.dumps(request), capture_output=True, text=True, cwd=NODE_DIR, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_protobuf_es_messages_round_trip(api, wire):
    """What protobuf-es writes goes in as is, and what comes back parses (after JSON.parse,
    where numbers above 2^53 would lose digits) into an equal message: POST, GET, PATCH, PUT
    (every field written, alwaysEmitImplicit), a bulk POST with ?columns= and
    Prefer: missing=default, and rows written by SQL."""
    conn, table, cls = api
    out = wire[2]
    canonical = [proto_json(m) for m in messages(cls)]
    sent = protobuf_es(out, {"mode": "send", "messages": canonical})
    assert sent[0]["i64"] == "-9223372036854775808" and sent[0]["data"]  # strings, base64
    assert sent[0]["due"] == {"year": 2026, "month": 2, "day": 3}  # google.type as messages
    pairs, ids = [], []
    for body in sent:
        (created,) = run(conn, rest.insert(table, body))
        (read,) = run(conn, rest.select(table, "id", created["id"]))
        (patched,) = run(conn, rest.update(table, body, "id", created["id"]))
        expected = {**body, "id": created["id"]}
        pairs += [[expected, created], [expected, read], [expected, patched]]
        ids.append(created["id"])
    # PUT replaces each row with a changed message, zero values written out.
    changed = [{**body, "id": row_id, "i64": "0", "level": "LEVEL_UNSPECIFIED", "flag": False,
                "due": {"year": 2027, "month": 12, "day": 31}, "opens": {"hours": 7}}
               for body, row_id in zip(canonical, ids, strict=True)]
    put_bodies = protobuf_es(out, {"mode": "send", "messages": changed,
                                   "alwaysEmitImplicit": True})
    assert put_bodies[0]["i64"] == "0" and put_bodies[0]["level"] == "LEVEL_UNSPECIFIED"
    for body in put_bodies:
        (put,) = run(conn, rest.upsert(table, body, "id"))
        pairs.append([body, put])
    # A bulk POST of messages that each leave out different fields.
    bulk = protobuf_es(out, {"mode": "send", "messages": canonical[1:]})
    assert len({tuple(sorted(body)) for body in bulk}) > 1
    fields = [f.name for f in cls.DESCRIPTOR.fields]
    created_rows = run(conn, rest.insert(table, bulk, columns=fields, missing_default=True))
    pairs += [[{**body, "id": row["id"]}, row]
              for body, row in zip(bulk, created_rows, strict=True)]
    conn.execute("INSERT INTO wire.everything (text, i64, data, took) "
                 "VALUES ('by sql', 9007199254740993, '\\xff00', interval '90 minutes')")
    conn.commit()
    (by_sql,) = run(conn, rest.select(table, "text", "by sql"))
    pairs.append([{"id": by_sql["id"], "text": "by sql", "i64": "9007199254740993",
                   "data": "/wA=", "took": "5400s", "anything": None}, by_sql])
    answers = protobuf_es(out, {"mode": "read", "pairs": pairs})
    unequal = [(pair[0], answer["received"]) for pair, answer in zip(pairs, answers, strict=True)
               if not answer["equal"]]
    assert not unequal
    # The check bites: a changed value is seen.
    wrong = protobuf_es(out, {"mode": "read", "pairs": [[pairs[0][0], {**pairs[0][1],
                                                                       "i64": "1"}]]})
    assert wrong[0]["equal"] is False


def test_representations_survive_a_changed_foundation(wire, database, tmp_path):
    """The foundation revokes its helpers from PUBLIC each time it is applied; the wire
    functions must stay callable, for every role and for the schema cache's loader."""
    files, cls, _ = wire
    assert database.migrate(files, tmp_path).returncode == 0
    # As when a later release changes the file: the ledger no longer matches, it runs again.
    database.query("DELETE FROM crud_meta.migrations WHERE name = '0001_foundation.sql'")
    done = database.migrate(files, tmp_path / "again")
    assert done.returncode == 0, done.stderr
    assert database.query("SELECT count(*) FROM crud_meta.migrations "
                          "WHERE name = '0001_foundation.sql'") == [(1,)]
    with database.connect() as conn:
        table = rest.shape(conn, "wire", "everything")
        assert table.readers["i64"] == "crud_meta.int64_zero_to_json", "seen by the loader"
        (created,) = run(conn, rest.insert(table, proto_json(messages(cls)[0])))
        same(cls, created, messages(cls)[0])

