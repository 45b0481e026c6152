"""Schema evolution: change the .proto, regenerate, migrate a database made by the old one.

Each scenario generates v1 through the real protoc plugin, applies it, writes rows, then
generates v2 and applies it over the same database. No row may be lost.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import pytest

from .support import ROOT, protoc, read_tree

HEADER = """
syntax = "proto3";
package evo.v1;
import "crud/v1/options.proto";
"""


def generate(tmp_path: Path, version: str, body: str) -> dict[str, str]:
    folder = tmp_path / version
    folder.mkdir()
    if "google/type/" in body:  # the wire test's stand-ins for googleapis' files
        shutil.copytree(ROOT / "testdata" / "wire" / "google", folder / "google")
    (folder / "item.proto").write_text(HEADER + textwrap.dedent(body))
    done = protoc(folder / "item.proto", folder / "out", parameter="target=postgres")
    assert done.returncode == 0, done.stderr
    return read_tree(folder / "out")


def columns(database) -> dict[str, tuple[str, bool]]:
    rows = database.query(
        "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
        "WHERE attrelid = 'item'::regclass AND attnum > 0 AND NOT attisdropped")
    return {name: (kind, not_null) for name, kind, not_null in rows}


def indexes(database) -> set[str]:
    rows = database.query("SELECT indexname FROM pg_indexes WHERE tablename = 'item'")
    return {r[0] for r in rows} - {"item_pkey"}


V1 = """
message Item {
  option (crud.v1.entity) = {
    indexes: {name: "idx_item_label" fields: ["label"]}
  };
  string label = 1;
  int32 quantity = 2;
  optional string note = 3;
}
"""


@pytest.fixture
def v1(database, tmp_path):
    done = database.migrate(generate(tmp_path, "v1", V1), tmp_path / "db")
    assert done.returncode == 0, done.stderr
    database.query("INSERT INTO item (label, quantity, note) "
                   "SELECT 'item ' || i, i, 'n' || i FROM generate_series(1, 50) i")
    return database


def upgrade(database, tmp_path, body):
    return database.migrate(generate(tmp_path, "v2", body), tmp_path / "db")


def all_rows(database, *cols):
    return database.query(f"SELECT {', '.join(cols)} FROM item ORDER BY quantity")


def test_add_fields(v1, tmp_path):
    before = all_rows(v1, "label", "quantity", "note")
    done = upgrade(v1, tmp_path, V1.replace("optional string note = 3;", """
      optional string note = 3;
      optional string color = 4;
      bool archived = 5 [(crud.v1.field).default_value = "false"];
    """))
    assert done.returncode == 0, done.stderr
    assert columns(v1)["color"] == ("text", False)
    assert columns(v1)["archived"] == ("boolean", True)
    assert all_rows(v1, "label", "quantity", "note") == before
    assert v1.query("SELECT count(*) FROM item WHERE archived = false") == [(50,)]


def test_add_and_drop_indexes(v1, tmp_path):
    body = V1.replace('indexes: {name: "idx_item_label" fields: ["label"]}',
                      'indexes: {name: "idx_item_quantity" fields: ["quantity"] unique: true}')
    assert upgrade(v1, tmp_path, body).returncode == 0
    assert indexes(v1) == {"idx_item_quantity"}
    assert v1.query("SELECT count(*) FROM item") == [(50,)]


def test_change_an_index_definition_in_place(v1, tmp_path):
    body = V1.replace('fields: ["label"]}', 'fields: ["label", "quantity"]}')
    assert upgrade(v1, tmp_path, body).returncode == 0
    definition = v1.query("SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_item_label'")
    assert "(label, quantity)" in definition[0][0]


def test_widen_a_type(v1, tmp_path):
    before = all_rows(v1, "label", "quantity")
    assert upgrade(v1, tmp_path, V1.replace("int32 quantity", "int64 quantity")).returncode == 0
    # int64 is a bigint in the domain that writes it as a JSON string (the wire contract),
    # the variant whose default is 0 (the field has implicit presence).
    assert columns(v1)["quantity"] == ("crud_meta.int64_zero", True)
    assert v1.query("SELECT typbasetype::regtype::text, pg_get_expr(typdefaultbin, 0) "
                    "FROM pg_type WHERE oid = 'crud_meta.int64_zero'::regtype") == [
        ("bigint", "'0'::bigint")]
    assert all_rows(v1, "label", "quantity") == before
    v1.query("INSERT INTO item (label, quantity) VALUES ('big', 9000000000)")


def test_add_a_constraint_existing_rows_meet(v1, tmp_path):
    body = V1.replace("int32 quantity = 2;",
                      "int32 quantity = 2 [(crud.v1.field).constraints.min = 1];")
    assert upgrade(v1, tmp_path, body).returncode == 0
    assert v1.query("SELECT conname FROM pg_constraint WHERE conrelid = 'item'::regclass "
                    "AND contype = 'c'") == [("item_quantity_min",)]
    assert v1.query("SELECT count(*) FROM item") == [(50,)]


def test_a_constraint_existing_rows_break_fails_and_changes_nothing(v1, tmp_path):
    body = V1.replace("int32 quantity = 2;",
                      "int32 quantity = 2 [(crud.v1.field).constraints.max = 10];")
    done = upgrade(v1, tmp_path, body)
    assert done.returncode != 0
    assert "item_quantity_max" in done.stderr
    assert v1.query("SELECT count(*) FROM pg_constraint WHERE conrelid = 'item'::regclass "
                    "AND contype = 'c'") == [(0,)]
    assert v1.query("SELECT count(*) FROM item") == [(50,)]


def test_rename_a_field_keeping_its_number(v1, tmp_path):
    before = all_rows(v1, "label", "quantity", "note")
    body = V1.replace("optional string note = 3;", "optional string remark = 3;")
    assert upgrade(v1, tmp_path, body).returncode == 0
    assert "remark" in columns(v1) and "note" not in columns(v1)
    assert all_rows(v1, "label", "quantity", "remark") == before


def test_removing_a_field_without_reserving_it_is_refused(v1, tmp_path):
    body = V1.replace("optional string note = 3;", "")
    done = upgrade(v1, tmp_path, body)
    assert done.returncode != 0
    assert "no longer declared: note (field #3)" in done.stderr
    assert "note" in columns(v1)


def test_reserved_field_keeps_its_column_and_data(v1, tmp_path):
    body = V1.replace("optional string note = 3;", "reserved 3;").replace(
        "int32 quantity = 2;", "int32 quantity = 2;\n  string owner = 4 "
        '[(crud.v1.field).default_value = "nobody"];')
    done = upgrade(v1, tmp_path, body)
    assert done.returncode == 0, done.stderr
    assert columns(v1)["note"] == ("text", False)
    assert v1.query("SELECT count(*) FROM item WHERE note IS NOT NULL") == [(50,)]
    v1.query("INSERT INTO item (label, quantity) VALUES ('new', 1)")  # note not required


def test_reserved_field_is_dropped_on_explicit_opt_in(v1, tmp_path):
    body = V1.replace("optional string note = 3;", "reserved 3;").replace(
        'option (crud.v1.entity) = {', 'option (crud.v1.entity) = {\n drop_reserved_columns: true')
    assert upgrade(v1, tmp_path, body).returncode == 0
    assert "note" not in columns(v1)
    assert v1.query("SELECT count(*) FROM item") == [(50,)]


def test_upgrade_applied_twice_is_a_no_op(v1, tmp_path):
    body = V1.replace("int32 quantity", "int64 quantity")
    assert upgrade(v1, tmp_path, body).returncode == 0
    again = v1.migrate(read_tree(tmp_path / "v2" / "out"), tmp_path / "db")
    assert again.returncode == 0 and "applying" not in again.stdout


BEFORE_WIRE = """
message Item {
  option (crud.v1.entity) = {};
  string label = 1;
  optional string status = 2 [(crud.v1.field).constraints = {enum_values: ["pending", "paid"]}];
  int64 big = 3;
  bytes data = 4;
  optional string color = 5 [(crud.v1.field).constraints = {enum_values: ["none", "red"]}];
}
"""
WIRE = """
message Item {
  option (crud.v1.entity) = {};
  enum Status {
    STATUS_UNSPECIFIED = 0;
    STATUS_PENDING = 1;
    STATUS_PAID = 2;
  }
  string label = 1;
  optional Status status = 2;
  int64 big = 3;
  bytes data = 4;
  enum Color {
    COLOR_NONE = 0;
    COLOR_RED = 1;
  }
  optional Color color = 5;
}
"""


def test_a_database_from_before_the_wire_contract_converges(database, tmp_path):
    """Versions before the wire contract stored a proto enum by short lower-case names
    (`paid`) and 64-bit integers and bytes in plain bigint and bytea columns. Today's
    migrations rewrite the names to value names (STATUS_PAID) and move the columns into the
    wire domains; no row is lost or changed otherwise."""
    done = database.migrate(generate(tmp_path, "v1", BEFORE_WIRE), tmp_path / "db")
    assert done.returncode == 0, done.stderr
    # What that version made: plain types, no domains.
    database.query("ALTER TABLE item ALTER COLUMN big TYPE bigint, "
                   "ALTER COLUMN data TYPE bytea")
    database.query("INSERT INTO item (label, status, big, data, color) "
                   "SELECT 'item ' || i, (ARRAY['pending', 'paid', NULL])[i % 3 + 1], "
                   "i * 9007199254740993 % 9223372036854775807, int8send(i), "
                   "(ARRAY['none', 'red'])[i % 2 + 1] FROM generate_series(1, 60) i")
    before = database.query("SELECT label, status, big, data, color FROM item ORDER BY label")
    done = upgrade(database, tmp_path, WIRE)
    assert done.returncode == 0, done.stderr
    after = database.query("SELECT label, status, big::bigint, data::bytea, color FROM item "
                           "ORDER BY label")
    names = {"pending": "STATUS_PENDING", "paid": "STATUS_PAID", None: None,
             "none": "COLOR_NONE", "red": "COLOR_RED"}  # a zero value not named UNSPECIFIED
    assert after == [(label, names[status], big, data, names[color])
                     for label, status, big, data, color in before]
    assert {s for _, s, _, _, _ in after} == {"STATUS_PENDING", "STATUS_PAID", None}
    kinds = columns(database)
    assert kinds["big"] == ("crud_meta.int64_zero", True)
    assert kinds["data"] == ("crud_meta.bytes_zero", True)
    with pytest.raises(Exception, match="item_status_enum"):
        database.query("INSERT INTO item (label, status) VALUES ('old', 'paid')")
    # Applying again changes nothing.
    (tmp_path / "again").mkdir()
    assert upgrade(database, tmp_path / "again", WIRE).returncode == 0
    assert database.query("SELECT label, status, big::bigint, data::bytea, color FROM item "
                          "ORDER BY label") == after


DATED = """
import "google/type/date.proto";
import "google/type/timeofday.proto";
message Item {
  option (crud.v1.entity) = {};
  string label = 1;
  google.type.Date due = 2;
  google.type.TimeOfDay opens = 3;
}
"""


def test_date_and_time_columns_move_into_their_wire_domains(database, tmp_path):
    """Versions before google.type.Date and TimeOfDay had their messages' JSON kept them in
    plain date and time columns. Today's migrations move the columns into the wire domains;
    every value stays as it was."""
    # What such a version generated: the table with the plain types.
    files = generate(tmp_path, "v1", DATED)
    table = "migrations/0100_item.sql"
    files[table] = (files[table].replace("crud_meta.calendar_date", "date")
                    .replace("crud_meta.time_of_day", "time without time zone"))
    (checksum,) = re.findall(r"name = '0100_item.sql' AND checksum = '(\w+)'",
                             files["migrations/migrate.psql"])
    files["migrations/migrate.psql"] = files["migrations/migrate.psql"].replace(
        checksum, "an-older-version")
    done = database.migrate(files, tmp_path / "db")
    assert done.returncode == 0, done.stderr
    database.query("INSERT INTO item (label, due, opens) "
                   "SELECT 'item ' || i, date '0001-01-01' + i * 60000, "
                   "time '00:00' + i * interval '23 minutes 7.000125 seconds' "
                   "FROM generate_series(1, 60) i")
    before = database.query("SELECT label, due, opens FROM item ORDER BY label")
    assert columns(database)["due"] == ("date", False)
    done = upgrade(database, tmp_path, DATED)
    assert done.returncode == 0, done.stderr
    kinds = columns(database)
    assert kinds["due"] == ("crud_meta.calendar_date", False)
    assert kinds["opens"] == ("crud_meta.time_of_day", False)
    assert database.query("SELECT label, due::date, opens::time FROM item "
                          "ORDER BY label") == before
