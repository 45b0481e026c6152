"""PostgreSQL on Kubernetes: a CloudNativePG Cluster, its roles, databases and publication,
and the Job that applies the generated migrations.

Roles are declared in the Cluster (`spec.managed.roles`) with exactly the attributes and
memberships the migrations give them (`crud_meta.ensure_role`, the GRANTs in 0002_roles.sql
and 0450_aggregates.sql): CloudNativePG reconciles declared roles and revokes memberships
that are not declared, so any difference would make the two fight. Passwords come from
`kubernetes.io/basic-auth` Secrets the user creates; no password is in any file.
"""

from __future__ import annotations

from ...aggregates import PIPELINE_ROLE
from ...model import Backend
from .. import postgres as postgres_target
from ..compose import IMAGES
from ..relay import RELAY_ROLE
from . import common as c

# The migrations image runs psql as the image's `postgres` user.
POSTGRES_UID = 999
MIGRATIONS_MOUNT = "/migrations"


def migration_files(backend: Backend) -> dict[str, str]:
    """migrations/ exactly as the postgres target writes it, keyed by file name."""
    prefix = postgres_target.FOLDER + "/"
    return {path.removeprefix(prefix): text
            for path, text in postgres_target.render(backend).items()}


def managed_roles(backend: Backend) -> list[dict]:
    auth = backend.auth
    member_of = list(backend.api_roles) + ([PIPELINE_ROLE] if backend.rules else [])
    roles = [{
        "name": auth.authenticator_role, "ensure": "present", "login": True,
        "inherit": False, "superuser": False, "createdb": False, "createrole": False,
        "replication": False, "bypassrls": False, "inRoles": sorted(member_of),
        "passwordSecret": {"name": c.AUTHENTICATOR_SECRET},
        "comment": "PostgREST's login; switches to the API roles per request",
    }]
    for role in [*backend.api_roles, *([PIPELINE_ROLE] if backend.rules else [])]:
        roles.append({"name": role, "ensure": "present", "login": False, "inherit": True,
                      "superuser": False, "createdb": False, "createrole": False,
                      "replication": False, "bypassrls": False})
    roles.append({
        "name": RELAY_ROLE, "ensure": "present", "login": True, "inherit": False,
        "superuser": False, "createdb": False, "createrole": False, "replication": True,
        "bypassrls": False, "passwordSecret": {"name": c.RELAY_SECRET},
        "comment": "crud-relay: reads the publication over logical replication",
    })
    if backend.rules:
        roles.append({
            "name": c.ARROYO_ROLE, "ensure": "present", "login": True, "inherit": True,
            "superuser": False, "createdb": False, "createrole": False,
            "replication": False, "bypassrls": False,
            "passwordSecret": {"name": c.ARROYO_DB_SECRET},
            "comment": "Arroyo's controller: owns its pipeline database",
        })
    return roles


def cluster(backend: Backend) -> dict:
    db = backend.database
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": c.metadata(c.CLUSTER, "postgres"),
        "spec": {
            "instances": 1,
            "imageName": c.postgres_image(),
            "primaryUpdateStrategy": "unsupervised",
            # The migrations Job connects as the superuser: they create roles, give the
            # relay REPLICATION and own the publication, as they do in compose.
            "enableSuperuserAccess": True,
            "bootstrap": {"initdb": {"database": db.name, "owner": "app"}},
            "postgresql": {
                "parameters": {
                    "wal_level": "logical",
                    "max_replication_slots": "10",
                    "max_wal_senders": "10",
                    "max_slot_wal_keep_size": "4GB",
                    # Logical slot failover (PostgreSQL 17+): standbys keep a copy of a
                    # slot created with the failover option (k8s/README.md).
                    "hot_standby_feedback": "on",
                    "sync_replication_slots": "on",
                },
            },
            "replicationSlots": {"highAvailability": {"enabled": True,
                                                      "synchronizeLogicalDecoding": True}},
            "managed": {"roles": managed_roles(backend)},
            "storage": {"size": "10Gi"},
            "resources": c.resources("500m", "1Gi", "2", "2Gi"),
        },
    }


def databases(backend: Backend) -> list[dict]:
    if not backend.rules:
        return []
    return [{
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Database",
        "metadata": c.metadata("arroyo-database", "postgres"),
        "spec": {"cluster": {"name": c.CLUSTER}, "name": c.ARROYO_DATABASE,
                 "owner": c.ARROYO_ROLE, "ensure": "present",
                 "databaseReclaimPolicy": "retain"},
    }]


def publication(backend: Backend) -> dict | None:
    """The publication crud-relay reads. The migrations create and converge it too (with
    the same tables and operations), so whichever runs first, both agree."""
    if not backend.streamed:
        return None
    db = backend.database
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Publication",
        "metadata": c.metadata("relay-publication", "postgres"),
        "spec": {
            "cluster": {"name": c.CLUSTER},
            "dbname": db.name,
            "name": db.publication,
            "parameters": {"publish": "insert, update, delete"},
            "target": {"objects": [{"table": {"schema": db.schema, "name": e.name}}
                                   for e in backend.streamed]},
            "publicationReclaimPolicy": "retain",
        },
    }


def migrations_name(backend: Backend) -> str:
    files = migration_files(backend)
    return "migrate-" + c.digest(*(f"{name}\n{text}" for name, text in sorted(files.items())))


def migrations(backend: Backend) -> list[c.Resource]:
    """The SQL as a ConfigMap and a Job running migrate.psql over it. Both are named after
    a hash of the migrations, so a changed schema is a new Job (a Job's template cannot be
    changed) and the old ConfigMap is not edited under a running Job. migrate.psql itself
    holds the advisory lock, applies only what the ledger lacks and ends with NOTIFY pgrst."""
    name = migrations_name(backend)
    db = backend.database
    files = migration_files(backend)
    volume = {"name": "migrations", "configMap": {"name": name}}
    container = {
        "name": "migrate",
        "image": IMAGES["migrate"],
        "command": ["psql", "-v", "ON_ERROR_STOP=1", "-f", "migrate.psql"],
        "workingDir": MIGRATIONS_MOUNT,
        "env": [
            {"name": "PGHOST", "value": c.PRIMARY},
            {"name": "PGPORT", "value": str(c.PG_PORT)},
            {"name": "PGDATABASE", "value": db.name},
            c.secret_env("PGUSER", c.SUPERUSER_SECRET, "username"),
            c.secret_env("PGPASSWORD", c.SUPERUSER_SECRET, "password"),
            {"name": "PGCONNECT_TIMEOUT", "value": "10"},
        ],
        "volumeMounts": [{"name": "migrations", "mountPath": MIGRATIONS_MOUNT,
                          "readOnly": True}],
        "resources": c.resources("100m", "128Mi", "500m", "256Mi"),
        "securityContext": c.secure(POSTGRES_UID),
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": c.metadata(name, "migrations"),
        "spec": {
            "backoffLimit": 10,
            "ttlSecondsAfterFinished": 86400,
            "template": c.pod_template("migrations", {
                "restartPolicy": "OnFailure",
                "securityContext": c.pod_security(POSTGRES_UID),
                "automountServiceAccountToken": False,
                "containers": [container],
                "volumes": [volume],
            }),
        },
    }
    return [c.config_map_files(name, "migrations", files), job]


def render(backend: Backend) -> dict[str, list[c.Resource]]:
    """Folder -> objects, one file per object."""
    postgres: list[c.Resource] = [cluster(backend), *databases(backend)]
    found = publication(backend)
    if found:
        postgres.append(found)
    return {"postgres": postgres, "migrations": migrations(backend)}
