"""protovalidate rules become database constraints with protovalidate's own verdicts.

testdata/protovalidate/rules.proto annotates entities with `buf.validate` rules. It goes
through the real protoc and the plugin; buf/validate/validate.proto comes, as a user's buf
dependency would, from the `protovalidate` package's serialized descriptor (a descriptor set
for `--descriptor_set_in`: the .proto itself is not copied here). For every rule, a set of
values is inserted into the generated table on a real PostgreSQL and judged by the
protovalidate library (its Rust runtime, on messages built from the same request): a row is
accepted exactly when protovalidate says the message is valid.
"""

from __future__ import annotations

import datetime
import math
import os
import subprocess
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.compiler import plugin_pb2
from psycopg import errors

from protoc_gen_crud.devloop import protoc_command

from . import postgrest_sql as rest
from .support import ROOT, read_tree, validate_descriptor_set
from .test_python_client import install, load

protovalidate = pytest.importorskip("protovalidate")

CORPUS = ROOT / "testdata" / "protovalidate"


def run_protoc(proto: Path, out: Path, tmp: Path) -> tuple[subprocess.CompletedProcess[str],
                                                          plugin_pb2.CodeGeneratorRequest]:
    """protoc + the plugin on `proto` with buf.validate available; the result and the
    request the plugin was given."""
    out.mkdir(parents=True, exist_ok=True)
    dump = tmp / "request.bin"
    command = protoc_command(proto.parent, out, proto.name)
    command.insert(3, f"--descriptor_set_in={validate_descriptor_set(tmp / 'validate.pb')}")
    done = subprocess.run(command, capture_output=True, text=True, cwd=proto.parent,
                          env={**os.environ, "PROTOC_GEN_CRUD_DUMP_REQUEST": str(dump)})
    return done, plugin_pb2.CodeGeneratorRequest.FromString(dump.read_bytes())


# (message, field values in proto form); unset fields are left out of both.
CASES: list[tuple[str, dict]] = [
    # Text: a valid baseline, then one rule broken at a time.
    *[("Text", {**base, **change}) for base in [{
        "name": "abc", "code": "xyz", "sku": "AB-12", "path": "/doc.txt", "size": "M",
        "word": "ok", "bytes_limited": "abcd"}] for change in [
        {}, {"name": "a"}, {"name": "ab"}, {"name": "abcde"}, {"name": "abcdef"},
        {"name": "ééééé"}, {"name": "éééééé"}, {"code": "xy"}, {"code": "xyzw"},
        {"sku": "AB-"}, {"sku": "ab-1"}, {"sku": "XAB-1"}, {"sku": "AB-1\n"},
        {"path": "doc.txt"}, {"path": "/doc.tx"}, {"path": "/d.txt"}, {"path": "/a/doc/b.txt"},
        {"size": "XL"}, {"size": ""}, {"size": "L"}, {"word": "admin"}, {"word": "two words"},
        {"word": ""}, {"email": "a@example.com"}, {"email": "a@"}, {"email": ""},
        {"email": "first.last+tag@sub.example.org"}, {"email": "a b@example.com"},
        {"email": "a@-example.com"}, {"ref": "123e4567-e89b-12d3-a456-426614174000"},
        {"ref": "123e4567e89b12d3a456426614174000"}, {"ref": "not-a-uuid"}, {"ref": ""},
        {"ref": "123E4567-E89B-12D3-A456-426614174000"}, {"bytes_limited": "abcde"},
        {"bytes_limited": "éé"}, {"bytes_limited": "ééé"}, {"line": "abc"},
        {"line": "a\nc"}, {"line": "abcd"}, {"line": "aéc"}, {"motto": "let go"},
        {"motto": "gopher"}, {"motto": "ago"}, {"motto": "go, go"}, {"tail": "the end"},
        {"tail": "the end\n"}, {"tail": "ending"},
    ]],
    *[("Numbers", {**base, **change}) for base in [{
        "rank": 5, "big": 0, "ratio": 0.5, "score": 1.0, "level": 2, "delta": 1,
        "answer": 42, "finite": 1.5}] for change in [
        {}, {"rank": 0}, {"rank": 1}, {"rank": 10}, {"rank": 11}, {"rank": -3},
        {"big": -5}, {"big": -6}, {"big": 8999999999999999999}, {"big": 9000000000000000000},
        {"ratio": 0.0}, {"ratio": 1.0}, {"ratio": 1e-9}, {"ratio": 0.999999},
        {"ratio": math.nan}, {"ratio": math.inf}, {"score": 0.5}, {"score": 0.49},
        {"score": math.nan}, {"score": math.inf}, {"score": -math.inf}, {"level": 0},
        {"level": 3}, {"level": 4}, {"delta": 0}, {"delta": 13}, {"delta": -13},
        {"answer": 41}, {"finite": math.nan}, {"finite": math.inf}, {"finite": -math.inf},
        {"finite": 0.0}, {"maybe": 3}, {"maybe": 2}, {"maybe": 0},
    ]],
    *[("Lists", {**base, **change}) for base in [{
        "title": "t", "note": "n", "tags": ["a"], "color": "COLOR_RED", "shade": "COLOR_GREEN",
        "hue": "COLOR_BLUE", "agreed": True}] for change in [
        {}, {"title": ""}, {"note": ""}, {"note": None}, {"tags": []}, {"tags": ["a", "b", "c"]},
        {"tags": ["a", "b", "c", "d"]}, {"tags": ["a", "a"]}, {"tags": ["a", "A"]},
        {"codes": [1, 2, 3]}, {"codes": [1, 2, 1]}, {"codes": []}, {"color": "COLOR_BLUE"},
        {"color": "COLOR_UNSPECIFIED"}, {"shade": "COLOR_RED"}, {"shade": "COLOR_BLUE"},
        {"shade": "COLOR_UNSPECIFIED"}, {"hue": "COLOR_UNSPECIFIED"}, {"agreed": False},
        {"nick": ""}, {"nick": "ab"}, {"nick": "abc"},
    ]],
    *[("Booking", {**base, **change}) for base in [{
        "start_day": 1, "end_day": 2, "code": "BK1Z", "guests": 2, "room": "A"}]
      for change in [
        {}, {"end_day": 1}, {"start_day": 3}, {"code": ""}, {"code": "BK1"}, {"code": "X1Z"},
        {"guests": 5}, {"guests": 5, "note": "short"}, {"guests": 5, "note": "long enough!"},
        {"guests": 4}, {"room": "B"}, {"room": "C7"}, {"room": "C77"}, {"room": "D"},
        {"room": "my suite"}, {"room": "big suite"}, {"room": ""}, {"note": "ab"},
        {"note": "abc"}, {"note": ""},
    ]],
    # Times: (seconds, microseconds) for Timestamp and Duration fields.
    *[("Times", change) for change in [
        {}, {"at": (0, 0)}, {"at": (0, 1)}, {"at": (-1, 0)}, {"at": (2000000000, 500000)},
        {"at": (2000000000, 500001)}, {"at": (2000000001, 0)}, {"wait": (1, 0)},
        {"wait": (0, 999999)}, {"wait": (3599, 999999)}, {"wait": (3600, 0)},
        {"wait": (-5, 0)}, {"fixed": (86400, 0)}, {"fixed": (86400, 1)}, {"fixed": (0, 0)},
    ]],
    *[("Contact", {**base, **change}) for base in [{"email": "e", "post": "p"}]
      for change in [
        {}, {"email": ""}, {"email": "", "phone": "1"}, {"phone": "1"}, {"fax": "f"},
        {"fax": ""}, {"pager": ["x"]}, {"fax": "f", "pager": ["x"]}, {"pager": []},
        {"post": None}, {"post": None, "courier": "c"}, {"post": ""},
    ]],
]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("protovalidate")
    done, request = run_protoc(CORPUS / "rules.proto", tmp / "out", tmp)
    assert done.returncode == 0, done.stderr
    pool = descriptor_pool.DescriptorPool()
    for file in request.proto_file:
        pool.Add(file)
    return read_tree(tmp / "out"), pool


TIMESTAMPS, DURATIONS = {"at", "fixed"}, {"wait"}


def as_proto(pool, name: str, value):
    """A (seconds, microseconds) pair as the Timestamp or Duration message; others as is."""
    if name not in TIMESTAMPS | DURATIONS:
        return value
    kind = "Timestamp" if name in TIMESTAMPS else "Duration"
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"google.protobuf.{kind}"))
    return cls(seconds=value[0], nanos=value[1] * 1000)


def as_sql(name: str, value):
    """A (seconds, microseconds) pair as the datetime or timedelta psycopg sends."""
    if name in TIMESTAMPS:
        return datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
            seconds=value[0], microseconds=value[1])
    if name in DURATIONS:
        return datetime.timedelta(seconds=value[0], microseconds=value[1])
    return value


def verdict(pool, message: str, values: dict) -> bool:
    """protovalidate's: is the message with these field values valid?"""
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"pv.v1.{message}"))
    msg = cls(**{k: as_proto(pool, k, v) for k, v in values.items() if v is not None})
    try:
        protovalidate.validate(msg)
    except protovalidate.ValidationError:
        return False
    return True


def accepted(conn, table: str, values: dict) -> bool:
    """The database's: does a row with these column values go in?"""
    columns = [k for k, v in values.items() if v is not None]
    sql = (f'INSERT INTO "{table}" ({", ".join(f"{chr(34)}{c}{chr(34)}" for c in columns)}) '
           f"VALUES ({', '.join(['%s'] * len(columns))})")
    if not columns:
        sql = f'INSERT INTO "{table}" DEFAULT VALUES'
    return goes_in(conn, sql, [as_sql(c, values[c]) for c in columns])


def goes_in(conn, sql: str, params) -> bool:
    """Whether the INSERT passes the table's CHECK and NOT NULL constraints (rolled back)."""
    with conn.transaction(force_rollback=True):
        try:
            with conn.transaction():
                conn.execute(sql, params)
        except (errors.CheckViolation, errors.NotNullViolation):
            return False
    return True


def test_database_and_protovalidate_agree(generated, database, tmp_path):
    files, pool = generated
    done = database.migrate(files, tmp_path)
    assert done.returncode == 0, done.stderr
    disagreements = []
    with database.connect() as conn:
        for message, values in CASES:
            table = {"Text": "text", "Numbers": "numbers", "Lists": "lists",
                     "Booking": "booking", "Contact": "contact", "Times": "times"}[message]
            valid = verdict(pool, message, values)
            if valid != accepted(conn, table, values):
                disagreements.append((message, values, "protovalidate says valid" if valid
                                      else "protovalidate says invalid"))
    assert not disagreements, "\n".join(map(str, disagreements))


def as_json(name: str, value):
    """A case's value in the wire contract's JSON (proto3 JSON, proto field names)."""
    if name in TIMESTAMPS:
        return as_sql(name, value).isoformat().replace("+00:00", "Z")
    if name in DURATIONS:
        micros = value[0] * 1_000_000 + value[1]
        whole, fraction = divmod(abs(micros), 1_000_000)
        return f"{'-' if micros < 0 else ''}{whole}.{fraction:06d}s"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    return value


@pytest.fixture(scope="module")
def client_package(generated, tmp_path_factory):
    files, _ = generated
    package, site = install({k: v for k, v in files.items() if k.startswith("clients/")},
                            tmp_path_factory.mktemp("pv-client"))
    return load(package, site)


def posted(conn, table: str, body: dict) -> bool:
    """The database's verdict on `body` as the API would insert it: PostgREST 12.2.3's
    INSERT for a POST (tests/postgrest_sql.py), so absent keys take the column defaults."""
    return goes_in(conn, *rest.insert(rest.shape(conn, "public", table, loader=None), body))


def test_typed_client_and_database_agree(generated, client_package, database, tmp_path):
    """The generated Python client checks every case before sending, from the rules the
    plugin read (all of this corpus's compile for the client), and refuses exactly the
    bodies the database refuses, naming the fields whose rules fail. Its verdict is also
    protovalidate's, except where the client's model cannot say what the case says: a
    field with presence made NOT NULL by `required` is a plain field in the client's
    model (no "unset"), so those cases (None values) are compared with the database only."""
    files, pool = generated
    pkg = client_package
    done = database.migrate(files, tmp_path)
    assert done.returncode == 0, done.stderr
    rules = [r for r in vars(pkg.rules).values() if isinstance(r, pkg.checks.Rules)]
    assert len(rules) == 6 and all(c.tree is not None for r in rules for c in r.checks)
    disagreements, refusals = [], 0
    with database.connect() as conn, pkg.Client("http://127.0.0.1:9") as api:
        for message, values in CASES:
            table = message.lower()
            info = getattr(pkg.client, message.upper())
            row = {k: as_json(k, v) for k, v in values.items() if v is not None}
            item = pkg.runtime.from_wire(info, row)
            api.session.check_rules = False
            body = getattr(api, table).body(item)  # what create() sends
            api.session.check_rules = True
            try:
                getattr(api, table).body(item)  # the same, checked
                client = True
            except pkg.InvalidMessage as error:
                client = False
                refusals += 1
                assert error.entity == table and error.fields
                assert set(error.fields) <= set(info.rules.kinds), error
            database_says = posted(conn, table, body)
            expected = {database_says}
            if None not in values.values():
                expected.add(verdict(pool, message, values))
            if expected != {client}:
                disagreements.append((message, values, body, f"client {client}, "
                                      f"database {database_says}"))
    assert not disagreements, "\n".join(map(str, disagreements))
    assert refusals > 40


def test_every_rule_has_valid_and_invalid_cases(generated):
    """Each message's cases include both verdicts, so agreement is not trivially reached."""
    _, pool = generated
    for message in ("Text", "Numbers", "Lists", "Booking", "Contact", "Times"):
        verdicts = {verdict(pool, m, v) for m, v in CASES if m == message}
        assert verdicts == {True, False}, message


def test_rules_land_in_crud_constraint_slots(generated):
    """Where a crud.v1 slot says the same thing, the rule is that slot's constraint."""
    files, _ = generated
    text = files["migrations/0100_text.sql"]
    assert "'text_name_min_length', 'CHECK (char_length(\"name\") >= 2)'" in text
    assert "'text_code_max_length', 'CHECK (char_length(\"code\") <= 3)'" in text
    numbers = files["migrations/0100_numbers.sql"]
    assert "'numbers_rank_min', 'CHECK (\"rank\" >= 1)'" in numbers
    assert "'numbers_rank_max', 'CHECK (\"rank\" <= 10)'" in numbers
