"""From a `crud.v1.Backend` message to the validated model.

Both front doors hand over a Backend message plus a SourceMap; everything the seed's best
practices promise (an `id` primary key, audit columns, least-privilege defaults) is added here,
and every problem is reported at once, each pointing at the place the user wrote it.
"""

from __future__ import annotations

from . import model
from .diagnostics import SourceMap
from .gen.crud.v1 import options_pb2 as pb
from .rules.api import ApiRules
from .rules.entities import EntityRules
from .rules.streams import StreamRules


class Builder(EntityRules, ApiRules, StreamRules):
    """Normalizes and validates one Backend message; `build()` returns the model. Each
    section of options.proto has its rules in its own module under `rules/`."""

    def build(self) -> model.Backend:
        msg = self.msg
        self.unique(
            ((("entity", i, "name"), e.name) for i, e in enumerate(msg.entity)),
            "entity", "the backend",
        )
        if not msg.entity:
            self.error((), "the backend has no entities; add an `entity { ... }` block "
                           "(textproto) or a message with option (crud.v1.entity)")
        database = self.database()
        auth, cors, rate_limit = self.api_settings()
        names = {e.name for e in msg.entity}
        entities = [self.entity(i, e, auth, names) for i, e in enumerate(msg.entity)]
        by_name = {e.name: e for e in entities}
        self.check_foreign_keys(entities, by_name)
        rules = self.rules(by_name)
        endpoints = self.endpoints(auth, entities, database.schema,
                                   [r.output_table for r in rules if r.output_table])
        self.check_schema_names(entities, rules)
        infrastructure = self.infrastructure()
        self.report.raise_if_any()
        return model.Backend(
            database=database,
            auth=auth,
            cors=cors,
            rate_limit=rate_limit,
            entities=tuple(entities),
            endpoints=tuple(endpoints),
            rules=tuple(rules),
            infrastructure=infrastructure,
        )

    def database(self) -> model.Database:
        db = self.msg.database
        schema = db.schema or "public"
        self.identifier(("database", "schema"), schema, "schema")
        publication = db.publication or "crud_changes"
        self.identifier(("database", "publication"), publication, "publication")
        if db.name:
            self.identifier(("database", "name"), db.name, "database")
        for k, extension in enumerate(db.extensions):
            self.identifier(("database", "extensions", k), extension, "extension")
        self.unique(((("database", "extensions", k), x) for k, x in enumerate(db.extensions)),
                    "extension", "database")
        port = db.connection.port or 5432
        if not 0 < port < 65536:
            self.error(("database", "connection", "port"), f"port {port} is not 1-65535")
        return model.Database(
            name=db.name or "crud",
            schema=schema,
            host=db.connection.host or "database",
            port=port,
            username=db.connection.username or "postgres",
            publication=publication,
            extensions=tuple(dict.fromkeys(db.extensions)),
        )

    def infrastructure(self) -> model.Infrastructure:
        infra = self.msg.infrastructure
        services = []
        known = {"database", "crud", "proxy", "relay", "redis", "mesh", "arroyo", "migrate"}
        for k, s in enumerate(infra.services):
            if s.name not in known:
                self.error(("infrastructure", "services", k, "name"), f"service {s.name!r} is "
                           f"not generated; use one of {', '.join(sorted(known))}")
            for attr in ("port", "published_port"):
                value = getattr(s, attr)
                if value and not 0 < value < 65536:
                    self.error(("infrastructure", "services", k, attr), f"{attr} {value} is "
                                                                        "not 1-65535")
            hc = s.health_check
            services.append(model.Service(s.name, s.port, s.published_port, s.image,
                                          hc.interval_seconds, hc.timeout_seconds, hc.retries))
        self.unique(((("infrastructure", "services", k, "name"), s.name)
                     for k, s in enumerate(infra.services)), "service", "infrastructure")
        obs = infra.observability
        return model.Infrastructure(
            services=tuple(sorted(services, key=lambda s: s.name)),
            observability=obs.enabled if obs.HasField("enabled") else True,
            scrape_interval_seconds=obs.scrape_interval_seconds or 15,
            otlp_endpoint=obs.otlp_endpoint,
        )

def build(backend: pb.Backend, sources: SourceMap) -> model.Backend:
    """Validate and normalize; raises GenerationError listing every problem."""
    return Builder(backend, sources).build()
