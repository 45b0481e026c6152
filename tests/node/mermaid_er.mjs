// Parses one Mermaid erDiagram (stdin) with Mermaid's own parser and prints what it read as
// JSON: {entities: {name: [{type, name, keys, comment}]}, relationships: [{referenced,
// referencing, label, cardinality: {referenced, referencing}, identifying}]}. A diagram
// Mermaid refuses exits non-zero with its message. Used by tests/test_readme.py.
import { readFileSync } from "node:fs";
import mermaid from "mermaid";

const text = readFileSync(0, "utf8");
mermaid.initialize({ startOnLoad: false });
const parsed = await mermaid.parse(text);
if (parsed.diagramType !== "er") {
  throw new Error(`not an ER diagram but ${parsed.diagramType}`);
}
const diagram = await mermaid.mermaidAPI.getDiagramFromText(text);
const entities = {};
const names = {};
for (const [name, entity] of diagram.db.getEntities()) {
  names[entity.id] = name;
  entities[name] = entity.attributes.map((a) => ({
    type: a.type, name: a.name, keys: a.keys, comment: a.comment,
  }));
}
// In `A ||--o{ B`, Mermaid files the symbol at B's end as cardA and the one at A's end as
// cardB.
const relationships = diagram.db.getRelationships().map((r) => ({
  referenced: names[r.entityA],
  referencing: names[r.entityB],
  label: r.roleA,
  cardinality: { referenced: r.relSpec.cardB, referencing: r.relSpec.cardA },
  identifying: r.relSpec.relType === "IDENTIFYING",
}));
console.log(JSON.stringify({ entities, relationships }));
