"""k8s/README.md: prerequisites, secrets, apply order, what scales and what must stay single.
Written from the model so that it lists exactly the Secrets this backend's manifests read."""

from __future__ import annotations

from ...model import Backend
from ...rendering import GENERATED
from ..arroyo import TOKEN_VARIABLE
from ..compose import IMAGES
from . import common as c
from .arroyo import OBJECT_STORAGE_KEYS


def prerequisite_secrets(backend: Backend) -> dict[str, tuple[str, ...]]:
    """Secret name -> keys, for every Secret the manifests read that nothing in the build
    creates (CloudNativePG creates `postgres-superuser` itself)."""
    found: dict[str, tuple[str, ...]] = {
        c.AUTHENTICATOR_SECRET: ("username", "password"),
        c.RELAY_SECRET: ("username", "password"),
        c.REDIS_SECRET: ("REDIS_PASSWORD",),
    }
    if backend.auth.type == "JWT" or (backend.auth.type == "OAUTH2"):
        found[c.JWT_SECRET] = ("PGRST_JWT_SECRET",)
    if backend.rules:
        found[c.ARROYO_DB_SECRET] = ("username", "password")
        if backend.auth.type != "NONE":
            found[c.PIPELINE_TOKEN_SECRET] = (TOKEN_VARIABLE,)
        found[c.OBJECT_STORAGE_SECRET] = OBJECT_STORAGE_KEYS
    return found


OPERATOR_SECRETS = (c.SUPERUSER_SECRET,)


def _secret_commands(backend: Backend) -> list[str]:
    from ..relay import RELAY_ROLE

    users = {c.AUTHENTICATOR_SECRET: backend.auth.authenticator_role,
             c.RELAY_SECRET: RELAY_ROLE, c.ARROYO_DB_SECRET: c.ARROYO_ROLE}
    lines = []
    for name, keys in prerequisite_secrets(backend).items():
        if name == c.OBJECT_STORAGE_SECRET:
            continue
        if "username" in keys:
            lines.append(f"kubectl -n $NS create secret generic {name} "
                         f"--type=kubernetes.io/basic-auth --from-literal=username={users[name]} "
                         f"--from-literal=password=\"$(openssl rand -hex 24)\"")
        elif keys == (TOKEN_VARIABLE,):
            lines.append(f"kubectl -n $NS create secret generic {name} "
                         f"--from-literal={TOKEN_VARIABLE}=\"$(PGRST_JWT_SECRET=... "
                         "crud-gen CONFIG --token crud_pipeline)\"")
        else:
            lines.append(f"kubectl -n $NS create secret generic {name} "
                         f"--from-literal={keys[0]}=\"$(openssl rand -hex 32)\"")
    return lines


def render(backend: Backend) -> str:
    rules = bool(backend.rules)
    secrets = prerequisite_secrets(backend)
    table = "\n".join(f"| `{name}` | {', '.join(f'`{k}`' for k in keys)} |"
                      for name, keys in secrets.items())
    arroyo = ""
    if rules:
        arroyo = f"""
## Arroyo

`arroyo` is one pod running `arroyo cluster` (API, controller, compiler) with Arroyo
0.12.1's Kubernetes scheduler: for each pipeline it starts worker pods (service account
`arroyo-worker`), owned by the controller pod, through the namespaced Role
`arroyo-scheduler` (pods and services in this namespace only). Its pipeline database is
`{c.ARROYO_DATABASE}` in the CloudNativePG cluster (a `Database` resource owned by the role
`{c.ARROYO_ROLE}`); the init container runs `arroyo migrate` on it. Where checkpoints go is
the ConfigMap `arroyo-storage`:

- **prod**: object storage. The bucket is the parameter in
  `overlays/prod/arroyo-storage.env` (`checkpoint-url=s3://<bucket>/...`); credentials come
  from the pod's cloud identity or the optional Secret `{c.OBJECT_STORAGE_SECRET}`
  ({', '.join(f'`{k}`' for k in OBJECT_STORAGE_KEYS)}).
- **dev**: the process scheduler (workers are processes of the controller pod) with
  checkpoints on the volume claim `arroyo-data`.

The registration Job (`arroyo-register-<hash>`) runs the generated `register.py` against
`http://arroyo:5115/api/v1`; its name changes with the queries, so applying a changed
query runs it again. Arroyo 0.12.1 offers no security context for the worker pods it
creates: they run as the image's user (root); the controller runs as UID 1000 with a
read-only root filesystem.
"""
    dev_extra = ", local Arroyo checkpoints" if rules else ""
    prod_extra = ", Arroyo checkpoints in object storage" if rules else ""
    arroyo_row = ("| Arroyo controller | **1** | a second controller would schedule every "
                  "pipeline twice; workers scale per pipeline |\n") if rules else ""
    return f"""<!-- {GENERATED} -->
# Kubernetes

A kustomize base with two overlays, rendered entirely by protoc-gen-crud (no Helm):

```
base/             one folder per component: postgres, migrations, postgrest, gateway,
                  relay, redis, dapr{', arroyo' if rules else ''}
components/observability   scrape annotations, alert rules, dashboard (a kustomize Component)
overlays/dev      one instance each, no disruption budgets{dev_extra}
overlays/prod     three PostgreSQL instances, autoscaled API and gateway, observability{prod_extra}
```

## Prerequisites

- **Kubernetes 1.30** or later (the checks use 1.32's schemas; PostgREST's pods drain with a
  `preStop` sleep action).
- **CloudNativePG** 1.27 or later (the `Cluster`, `Database` and `Publication` resources;
  checked against the 1.30 CRDs), installed cluster-wide.
- **Dapr** control plane 1.14 (`dapr init -k`): sidecar injection and the Component,
  Subscription, Resiliency and HTTPEndpoint resources. The injected sidecar is pinned to
  compose's `{IMAGES["mesh"]}` by the `dapr.io/sidecar-image` annotation, so a newer control
  plane does not change the version the generated metadata was checked against.
- An **ingress controller**: the Ingress is written for ingress-nginx (`ingressClassName:
  nginx`, annotations turning proxy buffering off for Server-Sent Events and keeping idle
  streams open for {c.INGRESS_READ_TIMEOUT_SECONDS} s, far above the gateway's
  {c.SSE_HEARTBEAT_SECONDS} s heartbeat). Add a `host` and TLS in an overlay.
- Optional: Prometheus that honours `prometheus.io/*` pod annotations (the scrape job is
  in the ConfigMap `crud-scrape`) and loads `crud-alerts`; Grafana's dashboard sidecar
  (label `grafana_dashboard`).
- The **relay image**: build `relay/` (`docker build -t <registry>/crud-relay:<tag>
  relay/`), push it and set `images:` in the overlay's `kustomization.yaml`.

## Secrets

No secret value is in any file. Create these in the namespace before applying (the
PostgreSQL passwords must be URL-safe: they are put into connection URLs):

| Secret | keys |
|---|---|
{table}

```bash
NS=my-backend
{chr(10).join(_secret_commands(backend))}
```

`{c.SUPERUSER_SECRET}` is created by CloudNativePG (`enableSuperuserAccess`); the
migrations Job connects with it, because the migrations create roles, grant REPLICATION to
the relay's role and own the publication, as they do under compose. The role Secrets are
read by CloudNativePG (`managed.roles[].passwordSecret`) and by the pods that log in.

## Apply order

```bash
kubectl apply -k overlays/prod -n $NS      # or overlays/dev
```

Everything can be applied at once; things then settle in this order: the CloudNativePG
cluster with its roles, the `migrate-<hash>` Job (it waits for the `{c.PRIMARY}` Service,
retrying), the publication (CloudNativePG retries it until the migrations created the
tables; both declare the same tables), then the relay, PostgREST (ready once its schema
cache loaded), the gateway{', Arroyo and the registration Job' if rules else ''}. Start the
relay before the API takes writes: it creates its replication slot on first start, and
earlier changes are not captured. A changed schema regenerates a Job with a new name: apply
again and it runs once; `migrate.psql` takes an advisory lock, so two runs never overlap,
applies only files whose checksum the ledger lacks, and ends with `NOTIFY pgrst`.

## What scales and what must stay single

| component | replicas | why |
|---|---|---|
| PostgREST (`crud`) | 2+, HPA in prod | stateless; connects to `{c.PRIMARY}`: its \
schema-cache `LISTEN` needs the primary |
| gateway (`proxy`) | 2+, HPA in prod | stateless; any replica serves any SSE client \
(plain `XREAD`, `Last-Event-ID` is a global stream id) |
| PostgreSQL | 1 (dev), 3 (prod) | CloudNativePG: one primary, standbys, automatic failover |
| relay | **exactly 1** | one consumer per replication slot |
| Redis | **1** | the change streams live in one append-only file |
{arroyo_row}
**Why the relay is a StatefulSet, not a Deployment.** A replication slot takes one
consumer. A Deployment's rolling update starts the new pod before the old one has stopped
(and a Deployment may briefly run two pods after a node failure), so the second would fight
for the slot. A StatefulSet with one replica has one pod identity (`relay-0`): a new one is
created only after the old one is gone.

**Failover of the replication slot.** The cluster synchronizes logical slots to the
standbys (`replicationSlots.highAvailability.synchronizeLogicalDecoding`,
`sync_replication_slots`, `hot_standby_feedback`; PostgreSQL 17 or later), which keeps a
slot created with the `failover` option usable on a promoted standby. crud-relay creates its
slot without that option today, so after a failover it creates a new slot on the new
primary: changes committed between the last confirmed position and the new slot are not
streamed; reload a snapshot as for a retention gap (README, Real time).
`max_slot_wal_keep_size` (4GB) bounds the WAL a stalled relay can hold back.
{arroyo}
## Dapr

`base/dapr/` holds the dapr target's resources, namespaced by `kubectl apply -n`. On
Kubernetes the components read Redis's password from the Secret `{c.REDIS_SECRET}` through
Dapr's built-in Kubernetes secret store (so the environment store `crud-secrets` is not
deployed) and `enableTLS` is `false` (this Redis has no TLS). Components are scoped to the
app id `crud` (the sidecar on PostgREST's pods, as compose's `mesh`) and the configured
subscribers, and so is the Resiliency; add your own apps' ids to `scopes` in an overlay.

## Security

Every container has resource requests and limits, drops all capabilities, may not
escalate privileges and runs as a non-root user with a read-only root filesystem (writable
paths are volumes); the gateway binds port 80 unprivileged through the pod's
`net.ipv4.ip_unprivileged_port_start` sysctl. The gateway's internal port (9145: metrics
and the aggregation publish endpoint) is on its Service for in-cluster callers but not on
the Ingress.
"""
