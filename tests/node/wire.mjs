// protobuf-es 2.x as a TypeScript/JavaScript service uses it, for tests/test_wire.py.
// Reads wire.proto's FileDescriptorSet at run time (no generated code needed) and answers
// one request on stdin:
//   {"mode": "send", "messages": [json...], "alwaysEmitImplicit": false}
//       each message as protobuf-es writes it with proto field names (what a client sends);
//       with alwaysEmitImplicit, also the fields at their zero value (for PUT and bulk POST)
//   {"mode": "read", "pairs": [[sent, received], ...]}
//       whether what came back parses (JSON.parse, then fromJson) into a message equal to
//       the one sent; the API's added audit fields are unknown to the message and ignored
import { readFileSync } from "node:fs";
import { createFileRegistry, equals, fromBinary, fromJson, fromJsonString, toJson }
  from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";

const [descriptorSet, typeName] = process.argv.slice(2);
const registry = createFileRegistry(
  fromBinary(FileDescriptorSetSchema, readFileSync(descriptorSet)));
const schema = registry.getMessage(typeName);
if (!schema) throw new Error(`no message ${typeName} in ${descriptorSet}`);

const request = JSON.parse(readFileSync(0, "utf8"));
let answer;
if (request.mode === "send") {
  answer = request.messages.map((json) =>
    toJson(schema, fromJson(schema, json, { registry }),
      { useProtoFieldName: true, alwaysEmitImplicit: request.alwaysEmitImplicit === true,
        registry }));
} else {
  answer = request.pairs.map(([sent, received]) => {
    const expected = fromJson(schema, sent, { registry });
    // The body as a browser or Node receives it: text through JSON.parse.
    const actual = fromJsonString(schema, JSON.stringify(received),
      { ignoreUnknownFields: true, registry });
    return {
      equal: equals(schema, expected, actual, { registry, unpackAny: true }),
      received: toJson(schema, actual, { useProtoFieldName: true, registry }),
    };
  });
}
process.stdout.write(JSON.stringify(answer));
