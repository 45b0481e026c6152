"""Rules for `Stream`, `Aggregation`, `AggregationRule` and `Window`: the aggregation rules
Arroyo runs, with their expressions checked against the entity's columns."""

from __future__ import annotations

import re
from urllib.parse import urlparse

from .. import aggregates, model, sqlexpr, sqltypes
from ..diagnostics import Path
from ..gen.crud.v1 import options_pb2 as pb
from .common import NEEDS_TARGET, RulesBase, enum_name


class StreamRules(RulesBase):
    """Aggregation rules and their windows."""

    def rules(self, by_name: dict[str, model.Entity]) -> list[model.Rule]:
        blocks: list[tuple[Path, pb.Stream, str]] = []
        if self.msg.HasField("stream") and not self.root_serves_entity("stream"):
            only = self.msg.entity[0].name if len(self.msg.entity) == 1 else ""
            if (self.msg.stream.HasField("enable_streaming") or self.msg.stream.max_len
                    or self.msg.stream.retention_max_len):
                self.error(("stream",), "enable_streaming, max_len and retention_max_len at the "
                           "root apply to no entity here; set them in each entity's stream block")
            blocks.append((("stream",), self.msg.stream, only))
        for i, e in enumerate(self.msg.entity):
            path, stream = self.entity_block(i, "stream")
            blocks.append((path, stream, e.name))
        result, names = [], []
        for path, stream, owner in blocks:
            for k, r in enumerate(stream.aggregation.rules):
                here = path + ("aggregation", "rules", k)
                name = self.identifier(here + ("name",), r.name, "aggregation rule")
                names.append((here + ("name",), name))
                where = f"aggregation rule {name!r}"
                source = r.source_entity or owner
                if r.source_entity and owner and r.source_entity != owner:
                    self.error(here + ("source_entity",), f"{where}: source_entity "
                               f"{r.source_entity!r} differs from the entity it is declared on")
                entity = by_name.get(source)
                if not source:
                    self.error(here + ("source_entity",), f"{where}: with several entities, "
                               "name the entity it reads in source_entity")
                elif entity is None:
                    self.error(here + ("source_entity",), f"{where}: source_entity "
                               f"{source!r} is not an entity")
                fields = {c.name: c for c in entity.columns} if entity else {}
                window = self.window(here + ("window",), r.window, where)
                fn = enum_name("FunctionType", r.function.type)
                fpath = here + ("function",)
                if fn == "UNSPECIFIED":
                    self.error(fpath + ("type",), f"{where}: function.type is not set; use "
                               "FUNCTION_TYPE_COUNT, _SUM, _AVG, _MIN, _MAX, ...")
                target = r.function.target_field
                if fn in NEEDS_TARGET and not target:
                    self.error(fpath + ("target_field",), f"{where}: FUNCTION_TYPE_{fn} needs "
                                                          "target_field")
                if target and entity and target not in fields:
                    self.error(fpath + ("target_field",), f"{where}: target_field "
                               f"{target!r} is not a field of entity {source!r} (fields: "
                               f"{', '.join(sorted(fields))})")
                elif target and entity and fn in ("SUM", "AVG") and not fields[target].numeric:
                    self.error(fpath + ("target_field",), f"{where}: FUNCTION_TYPE_{fn} needs "
                               f"a numeric field, and {target!r} is {fields[target].sql_type}")
                if fn == "CUSTOM" and not r.function.custom_sql.strip():
                    self.error(fpath + ("custom_sql",), f"{where}: FUNCTION_TYPE_CUSTOM needs "
                                                        "custom_sql")
                if fn != "CUSTOM" and r.function.custom_sql:
                    self.error(fpath + ("custom_sql",), f"{where}: custom_sql is only used "
                                                        "with FUNCTION_TYPE_CUSTOM")
                for n, g in enumerate(r.group_by):
                    if entity and g not in fields:
                        self.error(here + ("group_by", n), f"{where}: group_by field {g!r} is "
                                   f"not a field of entity {source!r}")
                out = r.output
                if out.table_name:
                    self.identifier(here + ("output", "table_name"), out.table_name,
                                    f"{where} output table")
                if out.webhook_url:
                    url = urlparse(out.webhook_url)
                    if url.scheme not in ("http", "https") or not url.netloc:
                        self.error(here + ("output", "webhook_url"), f"{where}: webhook_url "
                                   f"{out.webhook_url!r} is not an http(s) URL")
                if out.sse_channel and (
                        not re.fullmatch(r"/stream/[a-z0-9_-]+", out.sse_channel)
                        or out.sse_channel in ("/stream/sse", "/stream/session")):
                    self.error(here + ("output", "sse_channel"), f"{where}: sse_channel "
                               f"{out.sse_channel!r} must look like /stream/<name> (lower "
                               "case letters, digits, _ and -; not /stream/sse, which "
                               "serves the entities' change streams, nor /stream/session)")
                if entity:
                    self.rule_expressions(here, r, fields, where)
                    if not entity.streamed:
                        self.error(here + ("name",), f"{where}: entity {source!r} has "
                                   "enable_streaming: false, and a rule reads its change "
                                   "stream; turn streaming on or remove the rule")
                # Over a tenant-scoped entity every window is per tenant: the tenant column
                # leads the groups, so no result mixes tenants and output rows carry it.
                tenant = entity.access.tenant_column if entity else ""
                groups = ((tenant, *(g for g in r.group_by if g != tenant)) if tenant
                          else tuple(r.group_by))
                result.append(model.Rule(
                    name=name, description=r.description, entity=source, window=window,
                    function=fn, target_field=target, custom_sql=r.function.custom_sql.strip(),
                    separator=r.function.separator or ", ", group_by=groups,
                    having=r.having, where=r.where_condition, output_table=out.table_name,
                    webhook_url=out.webhook_url,
                    # Results nobody receives are useless: without outputs, publish them.
                    sse_channel=out.sse_channel or ("" if out.table_name or out.webhook_url
                                                    else f"/stream/{name}"),
                ))
        self.unique(names, "aggregation rule", "the backend")
        return result

    def rule_expressions(self, here: Path, r: pb.AggregationRule,
                         fields: dict[str, model.Column], where: str) -> None:
        """The rule's SQL pieces run in Arroyo: check their columns and functions here, so a
        mistake is reported at its rule rather than when the pipeline is deployed."""
        event = set(fields) | {"table_name", "action", "commit_time", "commit_lsn"}
        groups = [g for g in r.group_by if g in fields]
        for n, g in enumerate(r.group_by):
            if g in fields and g in aggregates.OUTPUT_NAMES:
                self.error(here + ("group_by", n), f"{where}: group_by field {g!r} has the "
                           f"name of an output column ({', '.join(aggregates.OUTPUT_NAMES)})")
        if aggregates.WATERMARK in fields:
            self.error(here + ("name",), f"{where}: the source entity has a field named "
                       f"{aggregates.WATERMARK!r}, which the pipeline needs for its watermark;"
                       " rename the field")
        pieces = [(("function", "custom_sql"), r.function.custom_sql, "custom_sql", event,
                   True, set(groups))]
        pieces.append((("where_condition",), r.where_condition, "where_condition", event,
                       False, None))
        pieces.append((("having",), r.having, "having",
                       {"value", "window_start", "window_end", *groups}, False, None))
        for sub, text, what, columns, allow_aggregates, grouped in pieces:
            if not text.strip():
                continue
            try:
                sqlexpr.check(text, columns, f"{where}: {what}", aggregates=allow_aggregates,
                              grouped=grouped)
            except sqlexpr.ExpressionError as problem:
                self.error(here + sub, str(problem))

    def window(self, path: Path, w: pb.Window, where: str) -> model.Window:
        kind = enum_name("WindowType", w.type)
        if kind == "UNSPECIFIED":
            self.error(path + ("type",), f"{where}: window.type is not set; use "
                       "WINDOW_TYPE_TUMBLING, WINDOW_TYPE_SLIDING or WINDOW_TYPE_SESSION")
        seconds = sqltypes.interval_seconds(w.interval)
        if seconds is None:
            self.error(path + ("interval",), f"{where}: interval {w.interval!r} is not like "
                       "\"30 seconds\", \"5 minutes\", \"1 hour\" or \"1 day\"")
            seconds = 60
        slide_seconds = 0
        if w.slide:
            if kind != "SLIDING":
                self.error(path + ("slide",), f"{where}: slide is only used by "
                                              "WINDOW_TYPE_SLIDING")
            slide_seconds = sqltypes.interval_seconds(w.slide) or 0
            if not slide_seconds:
                self.error(path + ("slide",), f"{where}: slide {w.slide!r} is not an interval")
            elif seconds % slide_seconds:
                self.error(path + ("slide",), f"{where}: the window width must be a whole "
                           f"multiple of slide ({w.interval} / {w.slide})")
        elif kind == "SLIDING":
            slide_seconds = seconds // 4 if seconds % 4 == 0 else seconds
        return model.Window(
            type=kind, interval=sqltypes.format_interval(seconds), seconds=seconds,
            slide=sqltypes.format_interval(slide_seconds) if slide_seconds else "",
            slide_seconds=slide_seconds,
        )

    def rule_path(self, rule: model.Rule) -> Path:
        for i in range(len(self.msg.entity)):
            path, stream = self.entity_block(i, "stream")
            for k, r in enumerate(stream.aggregation.rules):
                if r.name == rule.name:
                    return path + ("aggregation", "rules", k)
        for k, r in enumerate(self.msg.stream.aggregation.rules):
            if r.name == rule.name:
                return ("stream", "aggregation", "rules", k)
        return ()
