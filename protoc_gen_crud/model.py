"""The normalized, validated backend model: the only thing targets see.

Both front doors (annotated .proto files and textproto configs) end here. Everything in the
model is already checked and defaulted, so targets never need to re-validate or re-read
protobuf descriptors, and two inputs that mean the same thing give equal models.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import sqltypes


@dataclass(frozen=True)
class Default:
    """A column default: a literal of the column type, or a raw SQL expression."""

    kind: str  # "literal" | "expression" | "user_claim"
    text: str


@dataclass(frozen=True)
class Check:
    """A named CHECK constraint, kept structural so templates do all quoting."""

    name: str
    kind: str  # enum | enum_array | min | max | min_length | max_length | pattern | expression
    column: str = ""
    values: tuple[str, ...] = ()
    number: str = ""
    text: str = ""
    # enum only: (stored value, value) pairs rows are rewritten with before the check is
    # applied, e.g. ("paid", "STATUS_PAID") for databases made by versions that stored proto
    # enums by short lower-case names.
    renames: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Domain:
    """A crud_meta domain carrying a wire representation (see sqltypes.WIRE_KINDS)."""

    name: str  # e.g. int64, decimal_text_10_2, bytes_list, int64_zero
    base: str  # the PostgreSQL type it is over, e.g. "numeric(10,2)", "bigint[]"
    wire: str  # int64 | decimal | bytes | duration | date | time_of_day
    array: bool
    default: str | None  # the zero value's literal for the _zero variants, else None


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key from one column to another entity's column."""

    name: str
    column: str
    table: str
    ref_column: str
    on_delete: str  # SQL words, e.g. "CASCADE"
    on_update: str
    # Both entities tenant-scoped: the tenant columns the key also compares, so that a row
    # references only a row of its own tenant ("" = a plain single-column key).
    tenant_column: str = ""
    ref_tenant_column: str = ""


@dataclass(frozen=True)
class Column:
    """One table column. `key` is its stable identity across renames ("#3" = field 3)."""

    name: str
    key: str
    kind: str  # SqlType short name: TEXT, DECIMAL, ...
    sql_type: str  # as PostgreSQL's format_type() prints it, e.g. "numeric(10,2)", "text[]"
    nullable: bool
    default: Default | None
    identity: bool
    primary_key: bool
    unique: bool
    is_primary_content: bool
    implicit: bool
    description: str
    previous_names: tuple[str, ...] = ()
    # The crud_meta domain that gives the column its proto3 JSON form ("" = PostgreSQL's own).
    domain: str = ""

    @property
    def column_type(self) -> str:
        """The type the table declares: the wire domain, or the plain SQL type."""
        return f"crud_meta.{self.domain}" if self.domain else self.sql_type

    @property
    def wire(self) -> str:
        """The element's wire kind (int64, decimal, bytes, duration, date, time_of_day) or
        ""."""
        return sqltypes.WIRE_KINDS[self.kind] if self.domain else ""

    @property
    def numeric(self) -> bool:
        return not self.sql_type.endswith("]") and self.kind in NUMERIC_KINDS


NUMERIC_KINDS = frozenset(
    {"INTEGER", "BIGINT", "SMALLINT", "DECIMAL", "REAL", "DOUBLE", "SERIAL", "BIGSERIAL"}
)


@dataclass(frozen=True)
class Index:
    """A secondary index."""

    name: str
    columns: tuple[str, ...]
    method: str  # btree | hash | gin | gist | brin
    unique: bool
    where: str


@dataclass(frozen=True)
class SeedRow:
    """One row of default data: (column, literal) pairs, primary key included."""

    values: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Access:
    """Roles per operation and the optional owner column that turns on row-level security."""

    read: tuple[str, ...]
    create: tuple[str, ...]
    update: tuple[str, ...]
    delete: tuple[str, ...]
    owner_column: str
    admin_roles: tuple[str, ...]
    shared_read: bool
    # Multi-tenancy: the tenant column ("" = not tenant-scoped), the roles the tenant filter
    # does not apply to, and the tenant of rows that have none (existing and seeded rows).
    tenant_column: str = ""
    platform_roles: tuple[str, ...] = ()
    default_tenant: str = ""

    @property
    def roles(self) -> tuple[str, ...]:
        every = {*self.read, *self.create, *self.update, *self.delete, *self.admin_roles,
                 *self.platform_roles}
        return tuple(sorted(every))

    @property
    def tenant_bound_roles(self) -> tuple[str, ...]:
        """The roles row-level security keeps within their own tenant: every role of the
        entity except the platform roles."""
        return tuple(r for r in self.roles if r not in self.platform_roles)


@dataclass(frozen=True)
class Param:
    """A named, typed argument of a custom endpoint's SQL function ($n in order)."""

    name: str
    sql_type: str


@dataclass(frozen=True)
class Endpoint:
    """A custom endpoint served by PostgREST as /rpc/<function>."""

    path: str  # relative to base_path, e.g. "/products/by-category"
    base_path: str
    method: str  # GET | POST
    description: str
    query: str
    function: str
    params: tuple[Param, ...]
    roles: tuple[str, ...]
    security_definer: bool
    # The result's columns as the function returns them, read from the query; a type is ""
    # where only the server knows it (PostgreSQL types the function itself at migration).
    columns: tuple[Param, ...] = ()

    @property
    def volatility(self) -> str:
        return "STABLE" if self.method == "GET" else "VOLATILE"


@dataclass(frozen=True)
class Subscriber:
    """A Dapr app subscribed to an entity's change topic."""

    app_id: str
    route: str


@dataclass(frozen=True)
class Entity:
    """One table, its REST resource and its change stream."""

    name: str
    display_name: str
    description: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    checks: tuple[Check, ...]
    foreign_keys: tuple[ForeignKey, ...]
    indexes: tuple[Index, ...]
    seed: tuple[SeedRow, ...]
    base_path: str
    path: str
    access: Access
    streamed: bool
    stream_max_len: int
    subscribers: tuple[Subscriber, ...]
    # Entries kept at most for a lagging Dapr consumer group (Stream.retention_max_len).
    stream_retention_max_len: int
    retired_keys: tuple[str, ...]
    drop_retired: bool
    audit: bool

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def primary_content(self) -> str:
        return next((c.name for c in self.columns if c.is_primary_content), "")


@dataclass(frozen=True)
class Window:
    """An aggregation window; intervals in seconds plus the user's spelling."""

    type: str  # TUMBLING | SLIDING | SESSION
    interval: str
    seconds: int
    slide: str
    slide_seconds: int


@dataclass(frozen=True)
class Rule:
    """A windowed aggregation over one entity's change stream."""

    name: str
    description: str
    entity: str
    window: Window
    function: str  # COUNT | SUM | ... | CUSTOM
    target_field: str
    custom_sql: str
    separator: str
    group_by: tuple[str, ...]
    having: str
    where: str
    output_table: str
    webhook_url: str
    sse_channel: str


@dataclass(frozen=True)
class Database:
    """Where the tables live."""

    name: str
    schema: str
    host: str
    port: int
    username: str
    publication: str
    extensions: tuple[str, ...]


@dataclass(frozen=True)
class Auth:
    """API authentication and the PostgREST role names."""

    type: str  # NONE | JWT | OAUTH2
    anon_role: str
    authenticated_role: str
    authenticator_role: str
    audience: str
    jwks_url: str
    role_claim: str
    user_claim: str
    # The claim tenant-scoped entities compare their tenant column with (Access.tenant_field).
    tenant_claim: str = "tenant_id"
    # role_claim as a path: ("key", name) and ("index", "<n>") steps; one key for a name.
    role_claim_path: tuple[tuple[str, str], ...] = (("key", "role"),)

    @property
    def role_claim_is_default(self) -> bool:
        """The plain `role` claim, which PostgREST itself also writes into the claims."""
        return self.role_claim_path == (("key", "role"),)


@dataclass(frozen=True)
class Cors:
    """Cross-origin settings, answered by the gateway."""

    allowed_origins: tuple[str, ...]
    allowed_methods: tuple[str, ...]
    allowed_headers: tuple[str, ...]
    expose_headers: tuple[str, ...]
    allow_credentials: bool
    max_age_seconds: int


@dataclass(frozen=True)
class RateLimit:
    """Per-client rate limit; 0 requests per second means off."""

    requests_per_second: int
    burst: int
    max_body_size: str


@dataclass(frozen=True)
class Service:
    """Overrides of one generated service."""

    name: str
    port: int
    published_port: int
    image: str
    interval_seconds: int
    timeout_seconds: int
    retries: int


@dataclass(frozen=True)
class Infrastructure:
    """Deployment settings."""

    services: tuple[Service, ...]
    observability: bool
    scrape_interval_seconds: int
    otlp_endpoint: str


@dataclass(frozen=True)
class Backend:
    """The whole backend."""

    database: Database
    auth: Auth
    cors: Cors
    rate_limit: RateLimit
    entities: tuple[Entity, ...]
    endpoints: tuple[Endpoint, ...]
    rules: tuple[Rule, ...]
    infrastructure: Infrastructure

    @property
    def api_roles(self) -> tuple[str, ...]:
        """Every NOLOGIN role the API switches to, sorted."""
        roles = {self.auth.anon_role, self.auth.authenticated_role}
        for entity in self.entities:
            roles.update(entity.access.roles)
        for endpoint in self.endpoints:
            roles.update(endpoint.roles)
        return tuple(sorted(roles))

    @property
    def domains(self) -> tuple[Domain, ...]:
        """Every wire domain a column uses, sorted by name."""
        found = {}
        for column in (c for e in self.entities for c in e.columns if c.domain):
            array = column.sql_type.endswith("]")
            zero = (sqltypes.zero_literal(column.wire, array)
                    if column.domain.endswith("_zero") else None)
            found[column.domain] = Domain(column.domain, column.sql_type, column.wire, array,
                                          zero)
        return tuple(found[name] for name in sorted(found))

    @property
    def streamed(self) -> tuple[Entity, ...]:
        return tuple(e for e in self.entities if e.streamed)

    def entity(self, name: str) -> Entity:
        return next(e for e in self.entities if e.name == name)
