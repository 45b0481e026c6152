"""The `protoc-gen-crud` executable: CodeGeneratorRequest on stdin, response on stdout.

Set PROTOC_GEN_CRUD_DUMP_REQUEST=<file> to save the raw request for replay
(`protoc-gen-crud < file`, or `crud-gen --request file`). User errors become
`CodeGeneratorResponse.error` with every problem listed; no file is returned with them.
"""

from __future__ import annotations

import argparse
import os
import sys

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

from . import __version__, builder, descriptors
from .diagnostics import GenerationError
from .generate import generate
from .params import ParameterError
from .params import parse as parse_parameters
from .resources import proto_include_dir

DUMP_VARIABLE = "PROTOC_GEN_CRUD_DUMP_REQUEST"
Response = plugin_pb2.CodeGeneratorResponse


def run(request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    """Answer one request; never raises for user errors."""
    response = Response(
        supported_features=Response.FEATURE_PROTO3_OPTIONAL | Response.FEATURE_SUPPORTS_EDITIONS,
        minimum_edition=descriptor_pb2.EDITION_PROTO2,
        maximum_edition=descriptor_pb2.EDITION_2023,
    )
    try:
        params = parse_parameters(request.parameter)
        message, sources = descriptors.load(request)
        files = generate(builder.build(message, sources), params.targets)
    except ParameterError as exc:
        response.error = f"protoc-gen-crud: {exc}"
        return response
    except GenerationError as exc:
        response.error = str(exc)
        return response
    for path, text in files.items():
        response.file.add(name=path, content=text)
    return response


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="protoc-gen-crud",
        description="protoc/buf plugin: reads a CodeGeneratorRequest on stdin and writes the "
        "generated backend as a CodeGeneratorResponse on stdout.",
    )
    parser.add_argument("--version", action="version", version=f"protoc-gen-crud {__version__}")
    parser.add_argument("--include-path", action="store_true",
                        help="print the folder holding crud/v1/options.proto (for protoc -I)")
    args = parser.parse_args(argv)
    if args.include_path:
        print(proto_include_dir())
        return 0
    data = sys.stdin.buffer.read()
    dump = os.environ.get(DUMP_VARIABLE)
    if dump:
        with open(dump, "wb") as handle:
            handle.write(data)
    request = plugin_pb2.CodeGeneratorRequest.FromString(data)
    sys.stdout.buffer.write(run(request).SerializeToString())
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
