"""Rules for `Api`, `Access`, `Auth`, `Cors`, `RateLimit` and `CustomEndpoint`: who may do
what, how callers authenticate, and the SQL functions behind custom endpoints (with their
parameters typed as PostgreSQL infers them)."""

from __future__ import annotations

import re

from .. import endpoint_query, model, sqltypes
from ..diagnostics import Path
from ..gen.crud.v1 import options_pb2 as pb
from . import auth as auth_rules
from .common import RulesBase, enum_name, function_name, query_parameters


class ApiRules(RulesBase):
    """API blocks, access lists, authentication settings and custom endpoints."""

    def api_blocks(self) -> list[tuple[Path, pb.Api]]:
        """Every Api block in the config with its path: the root one, then each entity's."""
        blocks: list[tuple[Path, pb.Api]] = []
        if self.msg.HasField("api"):
            blocks.append((("api",), self.msg.api))
        for i, entity in enumerate(self.msg.entity):
            if entity.HasField("api"):
                blocks.append((("entity", i, "api"), entity.api))
        return blocks

    def backend_wide(self, field: str) -> tuple[Path, object] | None:
        """A backend-wide Api setting; it may be set once, or identically in several places."""
        found: tuple[Path, object] | None = None
        for path, api in self.api_blocks():
            if not api.HasField(field):
                continue
            value = getattr(api, field)
            if found is None:
                found = (path + (field,), value)
            elif found[1].SerializeToString(deterministic=True) != value.SerializeToString(
                deterministic=True
            ):
                first = self.report.sources.find(found[0])
                self.error(path + (field,), f"api.{field} differs from the one at {first}; "
                                            f"it is backend-wide, so set it once")
        return found

    def api_settings(self) -> tuple[model.Auth, model.Cors, model.RateLimit]:
        found = self.backend_wide("auth")
        a, auth_path = (found[1], found[0]) if found else (pb.Auth(), ("api", "auth"))
        roles = {}
        for key, default in (("anon_role", "anon"), ("authenticated_role", "authenticated"),
                             ("authenticator_role", "authenticator")):
            roles[key] = getattr(a, key) or default
            self.identifier(auth_path + (key,), roles[key], "role")
        if len(set(roles.values())) != 3:
            self.error(auth_path, "anon_role, authenticated_role and authenticator_role must "
                                  "be three different roles")
        kind = "JWT" if a.type == pb.AUTH_TYPE_UNSPECIFIED else enum_name("AuthType", a.type)
        if kind == "OAUTH2" and not a.jwks_url:
            self.error(auth_path + ("type",), "AUTH_TYPE_OAUTH2 needs jwks_url (the identity "
                                              "provider's JWKS address)")
        auth_rules.check(auth_path, a.role_claim, a.user_claim, a.audience, self.error)
        if a.tenant_claim and (not a.tenant_claim.strip() or '"' in a.tenant_claim):
            self.error(auth_path + ("tenant_claim",), f"tenant_claim {a.tenant_claim!r} must "
                       "name a top-level claim: not blank, no '\"'")
        auth = model.Auth(
            type=kind, audience=a.audience, jwks_url=a.jwks_url,
            role_claim=a.role_claim or "role", user_claim=a.user_claim or "sub", **roles,
            tenant_claim=a.tenant_claim or "tenant_id",
            role_claim_path=auth_rules.claim_path(a.role_claim or "role") or (("key", "role"),),
        )
        found = self.backend_wide("cors")
        c = found[1] if found else pb.Cors()
        for k, origin in enumerate(c.allowed_origins):
            if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d+)?", origin):
                self.error(found[0] + ("allowed_origins", k), f"CORS origin {origin!r} is not "
                           "like https://app.example.com (scheme, host, optional port) or *")
        if c.allow_credentials and "*" in c.allowed_origins:
            self.error(found[0] + ("allow_credentials",), "CORS with credentials cannot allow "
                       "origin \"*\"; list the allowed origins")
        cors = model.Cors(
            allowed_origins=tuple(c.allowed_origins),
            allowed_methods=tuple(m.upper() for m in c.allowed_methods)
            or ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"),
            allowed_headers=tuple(c.allowed_headers)
            or ("Authorization", "Content-Type", "Prefer", "Range", "Accept", "Last-Event-ID"),
            expose_headers=tuple(c.expose_headers) or ("Content-Range", "Location"),
            allow_credentials=c.allow_credentials,
            max_age_seconds=c.max_age_seconds or 600,
        )
        found = self.backend_wide("rate_limit")
        r = found[1] if found else pb.RateLimit()
        if r.requests_per_second < 0 or r.burst < 0:
            self.error(found[0], "rate limits cannot be negative")
        if r.max_body_size and not re.fullmatch(r"\d+[kKmMgG]?", r.max_body_size):
            self.error(found[0] + ("max_body_size",), f"max_body_size {r.max_body_size!r} is "
                       "not a size like 512k or 1m")
        per_second = r.requests_per_second if r.HasField("requests_per_second") else 20
        burst = r.burst if r.HasField("burst") else 2 * per_second
        rate = model.RateLimit(per_second, burst, r.max_body_size or "1m")
        return auth, cors, rate

    def access(self, path: Path, a: pb.Access, auth: model.Auth,
               columns: dict[str, model.Column], label: str) -> model.Access:
        lists = {}
        for op in ("read", "create", "update", "delete", "admin_roles"):
            values = getattr(a, op)
            for k, role in enumerate(values):
                self.identifier(path + (op, k), role, "role")
                if role == auth.authenticator_role:
                    self.error(path + (op, k), f"{label}: {role!r} is the authenticator login "
                               "role; it must not get table rights. Grant "
                               f"{auth.authenticated_role!r} or a role of your own instead")
            lists[op] = tuple(dict.fromkeys(values))
        if not a.ListFields():
            default = (auth.authenticated_role,)
            lists = {"read": default, "create": default, "update": default, "delete": default,
                     "admin_roles": ()}
        # PostgreSQL needs SELECT to find the rows an UPDATE or DELETE filters on (and
        # PostgREST to return them), so changing implies reading.
        lists["read"] = tuple(dict.fromkeys(lists["read"] + lists["update"] + lists["delete"]))
        owner = a.owner_field
        if owner:
            col = columns.get(owner)
            if col is None:
                self.error(path + ("owner_field",), f"{label}: owner_field {owner!r} is not a "
                           "field of the entity")
            elif col.kind not in ("TEXT", "UUID") or col.sql_type.endswith("]"):
                self.error(path + ("owner_field",), f"{label}: owner_field {owner!r} must be "
                           f"TEXT or UUID (it holds the user claim), not {col.sql_type}")
            anon = auth.anon_role
            for op in ("create", "update", "delete"):
                if anon in lists[op]:
                    self.error(path + (op,), f"{label}: with owner_field, {anon!r} cannot "
                               f"{op}: anonymous callers own no rows")
        platform = self.tenancy(path, a, auth, columns, label, lists)
        return model.Access(owner_column=owner, shared_read=a.shared_read, **{
            "read": lists["read"], "create": lists["create"], "update": lists["update"],
            "delete": lists["delete"], "admin_roles": lists["admin_roles"]},
            tenant_column=a.tenant_field, platform_roles=platform,
            default_tenant=a.default_tenant)

    def tenancy(self, path: Path, a: pb.Access, auth: model.Auth,
                columns: dict[str, model.Column], label: str,
                lists: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
        """Check `tenant_field`, `platform_roles` and `default_tenant`; the platform roles.

        The tenant column is compared with a claim as text and filled from it, so it must be
        a plain TEXT or UUID column; it cannot be the primary key (callers could not create
        rows with a key they may not write) nor the owner column. Platform roles only lift
        the tenant filter, so each must already have an operation: naming one that has none
        is a mistake the user should hear about."""
        tenant = a.tenant_field
        for k, role in enumerate(a.platform_roles):
            self.identifier(path + ("platform_roles", k), role, "role")
            if not tenant:
                self.error(path + ("platform_roles", k), f"{label}: platform_roles needs "
                           "tenant_field (there are no tenants to cross)")
            elif not any(role in lists[op] for op in ("read", "create", "update", "delete",
                                                      "admin_roles")):
                self.error(path + ("platform_roles", k), f"{label}: platform role {role!r} "
                           "has no operation on the entity; list it under read, create, "
                           "update, delete or admin_roles as well")
            elif role in (auth.anon_role, auth.authenticated_role):
                self.error(path + ("platform_roles", k), f"{label}: {role!r} cannot be a "
                           "platform role: every caller of that kind would see every tenant")
        if a.default_tenant and not tenant:
            self.error(path + ("default_tenant",), f"{label}: default_tenant needs "
                       "tenant_field")
        if not tenant:
            return tuple(dict.fromkeys(a.platform_roles))
        col = columns.get(tenant)
        if col is None:
            self.error(path + ("tenant_field",), f"{label}: tenant_field {tenant!r} is not a "
                       "field of the entity")
        elif col.kind not in ("TEXT", "UUID") or col.sql_type.endswith("]"):
            self.error(path + ("tenant_field",), f"{label}: tenant_field {tenant!r} must be "
                       f"TEXT or UUID (it holds the tenant claim), not {col.sql_type}")
        elif col.primary_key:
            self.error(path + ("tenant_field",), f"{label}: tenant_field {tenant!r} is the "
                       "primary key; add a field of its own for the tenant")
        elif col.default is not None:
            self.error(path + ("tenant_field",), f"{label}: tenant_field {tenant!r} has a "
                       "default; the tenant comes from the caller's claim, remove it")
        elif a.default_tenant:
            problem = sqltypes.literal_problem(col.kind, False, a.default_tenant)
            if problem:
                self.error(path + ("default_tenant",), f"{label}: default_tenant {problem}")
        if tenant and tenant == a.owner_field:
            self.error(path + ("tenant_field",), f"{label}: tenant_field and owner_field "
                       "are the same field; a tenant is not a user")
        if auth.type == "NONE":
            self.error(path + ("tenant_field",), f"{label}: tenant_field needs "
                       "authentication: with AUTH_TYPE_NONE no caller has a tenant claim")
        return tuple(dict.fromkeys(a.platform_roles))

    def endpoints(self, auth: model.Auth, entities: list[model.Entity], schema: str,
                  output_tables: list[str]) -> list[model.Endpoint]:
        blocks: list[tuple[Path, pb.Api, str]] = []
        if self.msg.HasField("api") and not self.root_serves_entity("api"):
            for key in ("entity_path", "access"):
                if self.msg.api.HasField(key) if key == "access" else self.msg.api.entity_path:
                    self.error(("api", key), f"api.{key} at the root applies to no entity here "
                               "(there are several entities, or the entity has its own api "
                               "block); move it into the entity's api block")
            blocks.append((("api",), self.msg.api, self.root_base_path()))
        for i in range(len(self.msg.entity)):
            path, api = self.entity_block(i, "api")
            base = entities[i].base_path if i < len(entities) else self.root_base_path()
            blocks.append((path, api, base))
        result = []
        seen: list[tuple[Path, str]] = []
        routes: list[tuple[Path, str]] = []
        # The tables an endpoint's query may name: the entities' (columns known) and the
        # aggregation rules' outputs (read as they are found).
        tables: dict[str, endpoint_query.Columns] = dict.fromkeys(output_tables)
        tables.update({e.name: {c.name: endpoint_query.ColumnType(c.sql_type, c.column_type)
                                for c in e.columns} for e in entities})
        for path, api, base in blocks:
            for k, ep in enumerate(api.custom_endpoints):
                here = path + ("custom_endpoints", k)
                where = f"custom endpoint {ep.path!r}"
                self.route(here + ("path",), ep.path, f"{where} path")
                method = ep.method.upper() or "GET"
                if method not in ("GET", "POST"):
                    self.error(here + ("method",), f"{where}: method {ep.method!r} is not "
                               "supported; use GET (read-only) or POST")
                fname = function_name(ep.path)
                if fname:
                    self.identifier(here + ("path",), fname, f"{where} function")
                seen.append((here + ("path",), fname))
                routes.append((here + ("path",), f"{method} {base}{ep.path}"))
                if not ep.sql_query.strip():
                    self.error(here + ("sql_query",), f"{where} has no sql_query")
                numbers = query_parameters(ep.sql_query)
                expected = list(range(1, len(numbers) + 1))
                if numbers != expected:
                    self.error(here + ("sql_query",), f"{where}: parameters must be numbered "
                               f"$1..$n without gaps; the query uses "
                               f"{', '.join('$' + str(n) for n in numbers)}")
                if len(ep.params) > len(numbers):
                    self.error(here + ("params",), f"{where}: params names "
                               f"{len(ep.params)} argument(s) but the query uses "
                               f"{len(numbers)}")
                reading = endpoint_query.read(ep.sql_query, tables, schema)
                for problem in reading.problems:
                    at = f" (at character {problem.position})" if problem.position else ""
                    self.error(here + ("sql_query",), f"{where}: PostgreSQL would refuse the "
                               f"query: {problem.message}{at}")
                if method == "GET" and reading.writes:
                    self.error(here + ("method",), f"{where}: a GET endpoint is read-only "
                               f"(a STABLE function) but the query writes ({reading.kind}); "
                               "set method: \"POST\"")
                params = []
                inferred = reading.params
                for n in range(1, max(numbers, default=0) + 1):
                    p = ep.params[n - 1] if n <= len(ep.params) else pb.Param()
                    pname = p.name or f"p{n}"
                    self.identifier(here + ("params", n - 1, "name"), pname, f"{where} param")
                    if p.type == pb.SQL_TYPE_UNSPECIFIED:  # as PostgreSQL infers it
                        sql_type = inferred.get(n, "text")
                    else:
                        sql_type = sqltypes.sql_type(enum_name("SqlType", p.type), False, None,
                                                     None)
                    params.append(model.Param(pname, sql_type))
                self.unique(((here + ("params", n), p.name) for n, p in enumerate(params)),
                            "param", where)
                roles = tuple(dict.fromkeys(ep.roles)) or (auth.authenticated_role,)
                for n, role in enumerate(ep.roles):
                    self.identifier(here + ("roles", n), role, "role")
                result.append(model.Endpoint(
                    path=ep.path, base_path=base, method=method, description=ep.description,
                    query=ep.sql_query.strip().rstrip(";").strip(), function=fname,
                    params=tuple(params), roles=roles, security_definer=ep.security_definer,
                    columns=tuple(model.Param(n, t) for n, t in reading.columns),
                ))
        self.unique(seen, "custom endpoint function", "the backend")
        self.unique(routes, "custom endpoint route", "the backend")
        for path, route in routes:
            method, url = route.split(" ", 1)
            for entity in entities:
                if url == entity.base_path + entity.path:
                    self.error(path, f"custom endpoint {url} is the route of entity "
                                     f"{entity.name!r}; choose another path")
        return sorted(result, key=lambda ep: ep.function)
