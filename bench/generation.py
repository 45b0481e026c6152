"""Generation time through protoc, as a ratio to protoc alone.

For 10, 100 and 1000 synthetic entities, times `protoc --crud_out` (protoc + our plugin) and
`protoc --descriptor_set_out` (protoc alone, parsing the same files) in the same run, and
prints the median of each and their ratio. Run: .venv/bin/python bench/generation.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from protoc_gen_crud.resources import proto_include_dir

PLUGIN = Path(sys.executable).parent / "protoc-gen-crud"


def synthetic(count: int) -> str:
    """One file with `count` annotated entities, each with the option kinds users write."""
    parts = [
        'syntax = "proto3";',
        "package bench.v1;",
        'import "crud/v1/options.proto";',
        'import "google/protobuf/timestamp.proto";',
        'option (crud.v1.database) = {name: "bench"};',
    ]
    for i in range(count):
        endpoint = (
            f'custom_endpoints: {{path: "/e{i}/by-kind" sql_query: '
            f'"SELECT kind, count(*) FROM entity_{i} WHERE label <> $1 GROUP BY kind"}}'
        )
        parts.append(f"""
message Entity{i} {{
  option (crud.v1.entity) = {{
    name: "entity_{i}"
    indexes: {{name: "idx_entity_{i}_kind" fields: ["kind", "amount"]}}
  }};
  option (crud.v1.api) = {{entity_path: "/e{i}" {endpoint}}};
  option (crud.v1.stream) = {{
    aggregation: {{rules: {{
      name: "rule_{i}"
      window: {{type: WINDOW_TYPE_TUMBLING interval: "5 minutes"}}
      function: {{type: FUNCTION_TYPE_SUM target_field: "amount"}}
    }}}}
  }};
  enum Kind {{ KIND_UNSPECIFIED = 0; KIND_A = 1; KIND_B = 2; }}
  string label = 1 [(crud.v1.field).constraints = {{max_length: 100}}];
  optional string note = 2;
  int64 amount = 3 [(crud.v1.field).constraints.min = 0];
  Kind kind = 4;
  bool active = 5 [(crud.v1.field).default_value = "true"];
  google.protobuf.Timestamp due_at = 6;
  repeated string tags = 7;
}}""")
    return "\n".join(parts) + "\n"


def median_seconds(command: list[str], cwd: Path, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, check=True, capture_output=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    protoc = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_include_dir()}", "-I."]
    print("| entities | protoc alone (s) | protoc + protoc-gen-crud (s) | ratio | files |")
    print("|---:|---:|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "bench.proto").write_text(synthetic(size))
            (folder / "out").mkdir()
            baseline = median_seconds(
                [*protoc, "--include_imports", "--descriptor_set_out=set.pb", "bench.proto"],
                folder, args.repeats)
            plugin = median_seconds(
                [*protoc, f"--plugin=protoc-gen-crud={PLUGIN}", "--crud_out=out",
                 "bench.proto"], folder, args.repeats)
            files = sum(1 for p in (folder / "out").rglob("*") if p.is_file())
        print(f"| {size} | {baseline:.3f} | {plugin:.3f} | {plugin / baseline:.1f}x | {files} |")


if __name__ == "__main__":
    main()
