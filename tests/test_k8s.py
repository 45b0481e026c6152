"""Kubernetes target: every object valid for its schema, the kustomize build, cross-references,
the migrations Job on real PostgreSQL, and the rules the issue sets (single relay, pinned
images, no secret values, limits, non-root).

Built-in kinds are validated strictly (unknown fields are errors) with `kubernetes-validate`
for Kubernetes 1.32; CloudNativePG resources with the strict schemas of its v1.30.0 CRDs
(../shared/reference/k8s) and Dapr resources with the strict schemas of Dapr's CRDs
(../shared/reference/k8s and ../shared/reference/dapr/jsonschema). Those CRD schemas leave
Resiliency and HTTPEndpoint open (an unknown key passes), so both kinds, here and in the dapr
target's dapr/ folder, are also checked against Dapr 1.14.4's own Go types (dapr_strict.py:
every level closed, exact json names and types). Each check is shown to fail on a
deliberately broken copy.
"""

from __future__ import annotations

import atexit
import copy
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from protoc_gen_crud.targets import compose, openresty, postgrest
from protoc_gen_crud.targets import dapr as dapr_target
from protoc_gen_crud.targets.k8s import common, readme, services
from protoc_gen_crud.targets.k8s import dapr as k8s_dapr

from . import dapr_rules, dapr_strict
from .kustomize_build import build, containers, merge, pod_spec
from .support import (
    EXAMPLES,
    EXAMPLES_DIR,
    from_text,
    from_textproto,
    model_of,
    protoc,
    read_tree,
    shared_file,
    write_tree,
)

KUBERNETES = "1.32"
OVERLAYS = ("base", "overlays/dev", "overlays/prod")
# Custom kinds -> their strict schema under ../shared/reference.
SCHEMAS = {
    ("postgresql.cnpg.io/v1", "Cluster"): "reference/k8s/cnpg-cluster.schema.json",
    ("postgresql.cnpg.io/v1", "Database"): "reference/k8s/cnpg-database.schema.json",
    ("postgresql.cnpg.io/v1", "Publication"): "reference/k8s/cnpg-publication.schema.json",
    ("dapr.io/v1alpha1", "Component"): "reference/k8s/dapr-component.schema.json",
    ("dapr.io/v2alpha1", "Subscription"): "reference/k8s/dapr-subscription.schema.json",
    ("dapr.io/v1alpha1", "Resiliency"): "reference/dapr/jsonschema/strict-Resiliency-v1alpha1.json",
    ("dapr.io/v1alpha1", "HTTPEndpoint"):
        "reference/dapr/jsonschema/strict-HTTPEndpoint-v1alpha1.json",
}
BUILT_IN_GROUPS = ("v1", "apps/v1", "batch/v1", "policy/v1", "networking.k8s.io/v1",
                   "autoscaling/v2", "rbac.authorization.k8s.io/v1")


@functools.cache
def files_of(name: str) -> dict[str, str]:
    return from_textproto(EXAMPLES_DIR / name / f"{name}.textproto", ["k8s"])


_TREES = Path(tempfile.mkdtemp(prefix="crud-k8s-"))
atexit.register(shutil.rmtree, _TREES, True)


@functools.cache
def tree_of(name: str) -> Path:
    """k8s/ of one example on disk, for kubectl and the Python build."""
    return write_tree(files_of(name), _TREES / name) / "k8s"


def built(name: str, overlay: str) -> list[dict]:
    return copy.deepcopy(_built(name, overlay))


@functools.cache
def _built(name: str, overlay: str) -> list[dict]:
    return build(tree_of(name) / overlay)


def by_key(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


CASES = [(name, overlay) for name in EXAMPLES for overlay in OVERLAYS]
IDS = [f"{name}-{overlay.split('/')[-1]}" for name, overlay in CASES]


# ------------------------------------------------------------------ schema checks
def validate_builtin(obj: dict) -> None:
    """kubernetes-validate, strict, for the pinned Kubernetes version."""
    kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def validate_custom(obj: dict) -> None:
    """The CRD's schema; for Resiliency and HTTPEndpoint also Dapr 1.14.4's Go types."""
    if (obj["apiVersion"], obj["kind"]) in dapr_strict.SCHEMAS:
        dapr_strict.validate(obj)
    relative = SCHEMAS[(obj["apiVersion"], obj["kind"])]
    schema = json.loads(shared_file(relative, "the CRD reference schemas").read_text())
    jsonschema.validate(obj, schema)


@pytest.mark.parametrize(("name", "overlay"), CASES, ids=IDS)
def test_builtin_objects_validate_strictly(name, overlay):
    objects = built(name, overlay)
    checked = set()
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in SCHEMAS:
            continue
        assert obj["apiVersion"] in BUILT_IN_GROUPS, (obj["apiVersion"], obj["kind"])
        validate_builtin(obj)
        checked.add(obj["kind"])
    assert {"Deployment", "StatefulSet", "Job", "Service", "ConfigMap", "Ingress"} <= checked


@pytest.mark.parametrize(("name", "overlay"), CASES, ids=IDS)
def test_custom_resources_match_crd_schemas(name, overlay):
    custom = [o for o in built(name, overlay) if (o["apiVersion"], o["kind"]) in SCHEMAS]
    kinds = {o["kind"] for o in custom}
    assert {"Cluster", "Component", "Resiliency", "HTTPEndpoint"} <= kinds
    for obj in custom:
        validate_custom(obj)


def test_the_schema_checks_fail_on_broken_copies():
    objects = by_key(built("storefront", "overlays/prod"))
    deployment = copy.deepcopy(objects[("Deployment", "postgrest")])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_builtin(deployment)
    service = copy.deepcopy(objects[("Service", "crud")])
    service["spec"]["ports"][0]["port"] = "3000"  # a string where an integer belongs
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_builtin(service)
    cluster = copy.deepcopy(objects[("Cluster", common.CLUSTER)])
    cluster["spec"]["managed"]["roles"][0]["passwordSecrets"] = {"name": "x"}
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(cluster)
    publication = copy.deepcopy(objects[("Publication", "relay-publication")])
    del publication["spec"]["dbname"]
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(publication)
    component = copy.deepcopy(objects[("Component", "crud-pubsub")])
    component["spec"]["metadata"][0]["secretRef"] = {"name": "x"}
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(component)
    subscription = copy.deepcopy(next(o for k, o in objects.items() if k[0] == "Subscription"))
    subscription["spec"]["route"] = "/x"
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(subscription)


def dapr_typed(name: str) -> list[tuple[str, dict]]:
    """Every Resiliency and HTTPEndpoint of one example: the dapr target's dapr/ files and
    each overlay of the k8s build."""
    found = []
    dapr_files = from_textproto(EXAMPLES_DIR / name / f"{name}.textproto", ["dapr"])
    for path, text in sorted(dapr_files.items()):
        for obj in yaml.safe_load_all(text):
            found.append((path, obj))
    for overlay in OVERLAYS:
        found += [(f"k8s/{overlay}", obj) for obj in built(name, overlay)]
    return [(where, obj) for where, obj in found
            if obj["kind"] in ("Resiliency", "HTTPEndpoint")]


@pytest.mark.parametrize("name", EXAMPLES)
def test_resiliency_and_endpoints_have_dapr_1_14_types(name):
    """Needs no shared/: the schemas are built from Dapr's Go structs (dapr_strict.py)."""
    typed = dapr_typed(name)
    counts = Counter((where.split("/")[0], obj["kind"]) for where, obj in typed)
    assert counts == {("dapr", "Resiliency"): 1, ("dapr", "HTTPEndpoint"): 2,
                      ("k8s", "Resiliency"): 3, ("k8s", "HTTPEndpoint"): 6}, counts
    assert {where: dapr_strict.errors(obj) for where, obj in typed} == {
        where: [] for where, _ in typed}


def test_the_dapr_type_check_refuses_what_dapr_would_drop():
    """An unknown key at the top, in spec, in a policy, in a target or in an endpoint's
    spec; a key of Dapr 1.15 (`matching`); a wrong case; a wrong type: each refused, and
    nothing else is reported for it."""
    typed = {(where.split("/")[0], obj["kind"]): obj for where, obj in dapr_typed("storefront")}
    assert set(dapr_strict.RETRY["properties"]) == dapr_rules.RETRY_FIELDS

    def refused(source: str, kind: str, change) -> list[str]:
        broken = copy.deepcopy(typed[(source, kind)])
        change(broken)
        with pytest.raises(jsonschema.ValidationError):
            dapr_strict.validate(broken)
        with pytest.raises(jsonschema.ValidationError):  # before any shared/ file is read
            validate_custom(broken)
        return dapr_strict.errors(broken)

    def policies(r):
        return r["spec"]["policies"]

    for source in ("dapr", "k8s"):
        assert refused(source, "Resiliency", lambda r: r.update(scope=["crud"])) == [
            "(top): Additional properties are not allowed ('scope' was unexpected)"]
        assert refused(source, "Resiliency", lambda r: r["spec"].update(policy={})) == [
            "spec: Additional properties are not allowed ('policy' was unexpected)"]
        assert refused(source, "Resiliency", lambda r: policies(r)["retries"]["events"].update(
            initialInterval="1s")) == [
            "spec.policies.retries.events: Additional properties are not allowed "
            "('initialInterval' was unexpected)"]
        assert refused(source, "Resiliency", lambda r: policies(r)["retries"]["events"].update(
            matching={"httpStatusCodes": "500-599"})) == [
            "spec.policies.retries.events: Additional properties are not allowed "
            "('matching' was unexpected)"]
        assert refused(source, "Resiliency", lambda r: policies(r)["circuitBreakers"][
            "backend"].update(maxrequests=1)) == [
            "spec.policies.circuitBreakers.backend: Additional properties are not allowed "
            "('maxrequests' was unexpected)"]
        assert refused(source, "Resiliency", lambda r: policies(r).update(
            timeout={"x": "1s"})) == [
            "spec.policies: Additional properties are not allowed ('timeout' was unexpected)"]
        assert refused(source, "Resiliency", lambda r: r["spec"]["targets"]["components"][
            "crud-pubsub"]["inbound"].update(retries="events")) == [
            "spec.targets.components.crud-pubsub.inbound: Additional properties are not "
            "allowed ('retries' was unexpected)"]
        assert refused(source, "Resiliency", lambda r: policies(r)["retries"]["events"].update(
            maxRetries="3")) == ["spec.policies.retries.events.maxRetries: '3' is not of "
                                 "type 'integer'"]
        assert refused(source, "Resiliency", lambda r: policies(r)["timeouts"].update(
            general=5000)) == ["spec.policies.timeouts.general: 5000 is not of type 'string'"]
        assert refused(source, "Resiliency", lambda r: r["metadata"].update(label={})) == [
            "metadata: Additional properties are not allowed ('label' was unexpected)"]
        assert refused(source, "HTTPEndpoint", lambda e: e.update(header=[])) == [
            "(top): Additional properties are not allowed ('header' was unexpected)"]
        assert refused(source, "HTTPEndpoint", lambda e: e["spec"].update(
            baseURL=e["spec"].pop("baseUrl"))) == [
            "spec: 'baseUrl' is a required property",
            "spec: Additional properties are not allowed ('baseURL' was unexpected)"]
        assert refused(source, "HTTPEndpoint", lambda e: e["spec"].update(
            headers=[{"name": "x", "valueFrom": "y"}])) == [
            "spec.headers.0: Additional properties are not allowed ('valueFrom' was "
            "unexpected)"]
        assert refused(source, "HTTPEndpoint", lambda e: e["spec"].update(
            clientTLS={"rootCA": {"secretKeyRef": {"name": "ca"}}, "insecure": True})) == [
            "spec.clientTLS: Additional properties are not allowed ('insecure' was "
            "unexpected)"]
    # What Dapr 1.14.4's types do have passes: actors, scopes, auth, headers, clientTLS.
    resiliency = copy.deepcopy(typed[("k8s", "Resiliency")])
    resiliency["spec"]["targets"]["actors"] = {"cart": {
        "timeout": "general", "retry": "calls", "circuitBreaker": "backend",
        "circuitBreakerScope": "both", "circuitBreakerCacheSize": 100}}
    assert dapr_strict.errors(resiliency) == []
    endpoint = copy.deepcopy(typed[("dapr", "HTTPEndpoint")])
    endpoint.update(auth={"secretStore": "crud-secrets"}, scopes=["crud"])
    endpoint["spec"].update(
        headers=[{"name": "a", "value": "1"}, {"name": "b", "envRef": "B"},
                 {"name": "c", "secretKeyRef": {"name": "s", "key": "k"}}],
        clientTLS={"rootCA": {"value": "PEM"}, "renegotiation": "OnceAsClient"})
    assert dapr_strict.errors(endpoint) == []


def test_the_crd_schemas_alone_let_unknown_dapr_keys_through():
    """Why dapr_strict.py exists: the reference CRD schemas accept an unknown key at the
    top, in spec and in a retry policy of these two kinds."""
    objects = by_key(built("storefront", "base"))
    for kind, name in (("Resiliency", "crud-resiliency"), ("HTTPEndpoint", "crud-api")):
        broken = copy.deepcopy(objects[(kind, name)])
        broken["unknownTop"] = 1
        broken["spec"]["unknownSpec"] = 1
        if kind == "Resiliency":
            broken["spec"]["policies"]["retries"]["events"]["initialInterval"] = "1s"
        relative = SCHEMAS[(broken["apiVersion"], kind)]
        schema = json.loads(shared_file(relative, "the CRD reference schemas").read_text())
        jsonschema.validate(broken, schema)  # passes: the gap dapr_strict closes
        with pytest.raises(jsonschema.ValidationError):
            validate_custom(broken)


# ------------------------------------------------------------------ kustomize
@pytest.mark.parametrize(("name", "overlay"), CASES, ids=IDS)
def test_kubectl_kustomize_builds_what_the_checks_read(name, overlay):
    """kubectl's build must equal the Python build every other check reads."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed: `kubectl kustomize` cannot run here; the "
                    "manifests are built by tests/kustomize_build.py and checked by the "
                    "other tests of this file")
    done = subprocess.run([kubectl, "kustomize", str(tree_of(name) / overlay)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    theirs = by_key([d for d in yaml.safe_load_all(done.stdout) if d])
    assert theirs == by_key(built(name, overlay))


def test_python_kustomize_refuses_what_it_does_not_know(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
         "namePrefix": "x-", "resources": []}))
    with pytest.raises(ValueError, match="unsupported"):
        build(tmp_path)
    assert merge({"a": [{"name": "x", "v": 1}]}, {"a": [{"name": "y"}]}) == {
        "a": [{"name": "y"}, {"name": "x", "v": 1}]}


# ------------------------------------------------------------------ cross-references
def _env_refs(container: dict, kind: str) -> set[str]:
    found = set()
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get(kind)
        if ref and not ref.get("optional"):
            found.add(ref["name"])
    for item in container.get("envFrom", []):
        ref = item.get(kind.replace("KeyRef", "Ref"))
        if ref and not ref.get("optional"):
            found.add(ref["name"])
    return found


def _worker_containers(objects: list[dict]) -> list[dict]:
    """The worker pod Arroyo's scheduler creates, from its config (env, volumes)."""
    arroyo = by_key(objects).get(("ConfigMap", "arroyo-config"))
    if not arroyo:
        return []
    worker = yaml.safe_load(arroyo["data"]["config.yaml"])["kubernetes-scheduler"]["worker"]
    return [{"env": worker["env"], "volumes": worker["volumes"]}]


def cross_reference_errors(objects: list[dict], nginx_conf: str | None,
                           secrets: set[str]) -> list[str]:
    """What does not resolve: selectors, ports, volumes, ConfigMaps, Secrets (those the
    README lists as prerequisites), the gateway's upstreams."""
    errors = []
    keys = by_key(objects)
    pods = []  # (owner, pod spec, labels)
    for obj in objects:
        spec = pod_spec(obj)
        if spec is not None:
            # A StatefulSet's claim templates are volumes of its pods.
            claims = [{"name": t["metadata"]["name"]}
                      for t in obj["spec"].get("volumeClaimTemplates", [])]
            spec = {**spec, "volumes": [*spec.get("volumes", []), *claims]}
            pods.append((obj["metadata"]["name"], spec,
                         obj["spec"]["template"]["metadata"]["labels"]))
    for obj in objects:
        if obj["kind"] != "Service":
            continue
        selector = obj["spec"]["selector"]
        matching = [(n, s) for n, s, labels in pods if selector.items() <= labels.items()]
        if not matching:
            errors.append(f"Service {obj['metadata']['name']} selects no pod template")
            continue
        for port in obj["spec"]["ports"]:
            names = {p.get("name") for _, s in matching for c in s["containers"]
                     for p in c.get("ports", [])}
            numbers = {p["containerPort"] for _, s in matching for c in s["containers"]
                       for p in c.get("ports", [])}
            target = port.get("targetPort", port["port"])
            if target not in names and target not in numbers:
                errors.append(f"Service {obj['metadata']['name']} port {target} is no "
                              "container port")
    for owner, spec, _ in pods:
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            ports = {p.get("name") for p in container.get("ports", [])} | {
                p["containerPort"] for p in container.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                if port is not None and port not in ports:
                    errors.append(f"{owner}/{container['name']} {probe} port {port} is no "
                                  "container port")
            mounted = {v["name"] for v in spec.get("volumes", [])}
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in mounted:
                    errors.append(f"{owner}/{container['name']} mounts unknown volume "
                                  f"{mount['name']}")
    return (errors + _reference_errors(objects, pods, keys, secrets)
            + _upstream_errors(objects, nginx_conf))


def _reference_errors(objects, pods, keys, prerequisites: set[str]) -> list[str]:
    errors = []
    specs = [(owner, spec) for owner, spec, _ in pods]
    specs += [("arroyo-worker", {"containers": [w], "volumes": w["volumes"]})
              for w in _worker_containers(objects)]
    for owner, spec in specs:
        for volume in spec.get("volumes", []):
            if "configMap" in volume and ("ConfigMap", volume["configMap"]["name"]) not in keys:
                errors.append(f"{owner} mounts missing ConfigMap {volume['configMap']['name']}")
            if "secret" in volume and volume["secret"]["secretName"] not in prerequisites:
                errors.append(f"{owner} mounts unlisted Secret {volume['secret']['secretName']}")
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim and ("PersistentVolumeClaim", claim) not in keys:
                errors.append(f"{owner} mounts missing claim {claim}")
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            for name in _env_refs(container, "configMapKeyRef"):
                if ("ConfigMap", name) not in keys:
                    errors.append(f"{owner} reads missing ConfigMap {name}")
            for name in _env_refs(container, "secretKeyRef"):
                if name not in prerequisites:
                    errors.append(f"{owner} reads Secret {name}, not a listed prerequisite")
    for obj in objects:
        if obj["kind"] == "Cluster":
            for role in obj["spec"]["managed"]["roles"]:
                secret = role.get("passwordSecret", {}).get("name")
                if secret and secret not in prerequisites:
                    errors.append(f"role {role['name']} reads unlisted Secret {secret}")
        if obj["kind"] == "Component":
            for item in obj["spec"]["metadata"]:
                secret = item.get("secretKeyRef", {}).get("name")
                if secret and secret not in prerequisites:
                    errors.append(f"component {obj['metadata']['name']} reads unlisted "
                                  f"Secret {secret}")
    return errors


def _upstream_errors(objects: list[dict], nginx_conf: str | None) -> list[str]:
    if nginx_conf is None:
        return []
    services_by_name = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    errors = []
    for host, port in re.findall(r"^\s*server\s+([a-z0-9.-]+):(\d+)", nginx_conf, re.M):
        found = services_by_name.get(host)
        if not found or int(port) not in {p["port"] for p in found["spec"]["ports"]}:
            errors.append(f"nginx upstream {host}:{port} is no Service port")
    return errors


def gateway_conf(objects: list[dict]) -> str:
    volume = next(v for v in by_key(objects)[("Deployment", "gateway")]["spec"]["template"]
                  ["spec"]["volumes"] if v["name"] == "conf")
    return by_key(objects)[("ConfigMap", volume["configMap"]["name"])]["data"]["nginx.conf"]


def listed_secrets(name: str) -> set[str]:
    """Secrets k8s/README.md lists as prerequisites (its table) plus those CloudNativePG
    makes, read from the generated README itself."""
    text = files_of(name)["k8s/README.md"]
    table = set(re.findall(r"^\| `([a-z0-9-]+)` \|", text, re.M))
    assert table == set(readme.prerequisite_secrets(model_of(name)))
    for secret in table:
        assert f"create secret generic {secret} " in text or secret == \
            common.OBJECT_STORAGE_SECRET
    assert common.SUPERUSER_SECRET in text
    return table | set(readme.OPERATOR_SECRETS)


@pytest.mark.parametrize(("name", "overlay"), CASES, ids=IDS)
def test_cross_references_hold(name, overlay):
    objects = built(name, overlay)
    conf = gateway_conf(objects)
    assert re.search(r"^\s*server\s+crud:3000;", conf, re.M)
    assert cross_reference_errors(objects, conf, listed_secrets(name)) == []


def test_the_cross_reference_check_fails_on_broken_copies():
    objects = built("storefront", "overlays/prod")
    conf = gateway_conf(objects)
    secrets = listed_secrets("storefront")

    def errors_after(change) -> list[str]:
        broken = copy.deepcopy(objects)
        text = change(by_key(broken))
        return cross_reference_errors(broken, text if isinstance(text, str) else conf, secrets)

    def selector(k):
        k[("Service", "crud")]["spec"]["selector"] = {"app.kubernetes.io/name": "api"}
    assert errors_after(selector) == ["Service crud selects no pod template"]

    def probe(k):
        k[("Deployment", "postgrest")]["spec"]["template"]["spec"]["containers"][0][
            "readinessProbe"]["httpGet"]["port"] = "adm"
    assert errors_after(probe) == ["postgrest/postgrest readinessProbe port adm is no "
                                   "container port"]

    def config_map(k):
        volume = k[("Deployment", "gateway")]["spec"]["template"]["spec"]["volumes"][0]
        volume["configMap"]["name"] = "gateway-old"
    assert errors_after(config_map) == ["gateway mounts missing ConfigMap gateway-old"]

    def secret(k):
        k[("StatefulSet", "relay")]["spec"]["template"]["spec"]["containers"][0]["env"][0][
            "valueFrom"]["secretKeyRef"]["name"] = "relay-password"
    assert errors_after(secret) == ["relay reads Secret relay-password, not a listed "
                                    "prerequisite"]

    def service_port(k):
        k[("Service", "proxy")]["spec"]["ports"][1]["targetPort"] = "metrics"
    assert errors_after(service_port) == ["Service proxy port metrics is no container port"]

    def upstream(k):
        return conf.replace("server crud:3000;", "server postgrest:3000;")
    assert errors_after(upstream) == ["nginx upstream postgrest:3000 is no Service port"]


# ------------------------------------------------------------------ migrations Job
def _migrations(objects: list[dict]) -> tuple[dict, dict]:
    job = next(o for o in objects if o["kind"] == "Job" and
               o["metadata"]["name"].startswith("migrate-"))
    volume = job["spec"]["template"]["spec"]["volumes"][0]
    return job, by_key(objects)[("ConfigMap", volume["configMap"]["name"])]


@pytest.mark.parametrize("name", EXAMPLES)
def test_migrations_job_sql_is_the_migrations_folder(name):
    job, config_map = _migrations(built(name, "overlays/prod"))
    expected = {path.removeprefix("migrations/"): text for path, text in from_textproto(
        EXAMPLES_DIR / name / f"{name}.textproto", ["postgres"]).items()}
    assert config_map["data"] == expected
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["psql", "-v", "ON_ERROR_STOP=1", "-f", "migrate.psql"]
    assert container["volumeMounts"][0]["mountPath"] == container["workingDir"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PGHOST"]["value"] == "postgres-rw"
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "postgres-superuser"
    # migrate.psql holds the advisory lock and ends by reloading PostgREST's schema cache.
    driver = config_map["data"]["migrate.psql"]
    assert "pg_advisory_lock(" in driver
    assert driver.rstrip().endswith("NOTIFY pgrst, 'reload schema';")


def test_a_changed_schema_is_a_new_job():
    text = 'entity { name: "note" fields { name: "body" type: SQL_TYPE_TEXT } }'
    changed = text.replace('type: SQL_TYPE_TEXT } }',
                           'type: SQL_TYPE_TEXT } fields { name: "title" type: SQL_TYPE_TEXT } }')

    def job_names(config: str) -> set[str]:
        files = from_text(config, targets=["k8s"])
        return {path for path in files if path.startswith("k8s/base/migrations/job-")}

    first, second = job_names(text), job_names(changed)
    assert len(first) == len(second) == 1
    assert first != second
    assert job_names(text) == first


def test_two_concurrent_migration_jobs_apply_everything_once(database, tmp_path):
    """The Job's own command, twice at once on real PostgreSQL: while a third session holds
    the advisory lock both wait; released, one applies every file and the other nothing."""
    job, config_map = _migrations(built("storefront", "base"))
    container = job["spec"]["template"]["spec"]["containers"][0]
    folder = tmp_path / container["workingDir"].strip("/")
    folder.mkdir(parents=True)
    for key, text in config_map["data"].items():
        (folder / key).write_text(text)
    server = database.server
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(server.port),
           "PGUSER": server.superuser, "PGDATABASE": database.name}
    command = [server.psql if c == "psql" else c for c in container["command"]]
    holder = database.connect(autocommit=True)
    holder.execute("SELECT pg_advisory_lock(hashtext('crud_meta.migrations'))")
    runs = [subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        deadline = time.monotonic() + 30
        waiting = 0
        while time.monotonic() < deadline and waiting < 2:
            waiting = database.query("SELECT count(*) FROM pg_locks WHERE locktype = "
                                     "'advisory' AND NOT granted")[0][0]
            time.sleep(0.05)
        assert waiting == 2, "both runs should wait for the lock"
        assert all(run.poll() is None for run in runs)
    finally:
        holder.execute("SELECT pg_advisory_unlock(hashtext('crud_meta.migrations'))")
        holder.close()
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outputs]
    migrations = sorted(k for k in config_map["data"] if k.endswith(".sql"))
    applied = [re.findall(r"^applying (\S+)$", out, re.M) for out, _ in outputs]
    assert sorted((sorted(a) for a in applied), key=len) == [[], migrations]
    ledger = database.query("SELECT name, count(*) FROM crud_meta.migrations GROUP BY name "
                            "ORDER BY name")
    assert ledger == [(m, 1) for m in migrations]


# ------------------------------------------------------------------ the issue's rules
def _all_containers(objects: list[dict]) -> list[tuple[str, dict]]:
    found = [(o["metadata"]["name"], c) for o in objects for c in containers(o)]
    found += [("arroyo-worker", {"name": "worker", "image": w_image, "resources": w_res})
              for w_image, w_res in _worker_images(objects)]
    return found


def _worker_images(objects: list[dict]) -> list[tuple[str, dict]]:
    arroyo = by_key(objects).get(("ConfigMap", "arroyo-config"))
    if not arroyo:
        return []
    worker = yaml.safe_load(arroyo["data"]["config.yaml"])["kubernetes-scheduler"]["worker"]
    return [(worker["image"], worker["resources"])]


@pytest.mark.parametrize(("name", "overlay"), CASES, ids=IDS)
def test_images_are_pinned_like_compose_and_limited(name, overlay):
    objects = built(name, overlay)
    allowed = set(compose.IMAGES.values())
    relay = [i for i in (o.get("newName") for o in yaml.safe_load(
        (tree_of(name) / overlay / "kustomization.yaml").read_text()).get("images", [])) if i]
    for owner, container in _all_containers(objects):
        image = container["image"]
        assert image in allowed or image.split(":")[0] in ["crud-relay", *relay], (owner, image)
        assert ":" in image and not image.endswith(":latest"), image
        limits = container["resources"]
        assert set(limits) == {"requests", "limits"}, owner
        assert {"cpu", "memory"} <= set(limits["requests"]) <= set(limits["limits"]), owner
    cluster = by_key(objects)[("Cluster", "postgres")]
    assert set(cluster["spec"]["resources"]) == {"requests", "limits"}
    # The CloudNativePG operand is the PostgreSQL release compose pins, same major.
    compose_version = re.search(r":(\d+)\.(\d+)", compose.IMAGES["database"]).groups()
    cnpg = re.search(r"postgresql:(\d+)\.(\d+)-", cluster["spec"]["imageName"]).groups()
    assert cnpg == compose_version
    assert cluster["spec"]["imageName"].startswith("ghcr.io/cloudnative-pg/postgresql:")
    for obj in objects:
        annotations = (obj.get("spec", {}).get("template", {}).get("metadata", {})
                       .get("annotations", {}))
        if annotations.get("dapr.io/enabled") == "true":  # the injected sidecar's limits
            for key in ("cpu-request", "cpu-limit", "memory-request", "memory-limit"):
                assert f"dapr.io/sidecar-{key}" in annotations


@pytest.mark.parametrize(("name", "overlay"), CASES, ids=IDS)
def test_pods_run_unprivileged_with_read_only_root(name, overlay):
    for obj in built(name, overlay):
        spec = pod_spec(obj)
        if spec is None:
            continue
        pod = spec.get("securityContext", {})
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, obj["metadata"]["name"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            non_root = context.get("runAsNonRoot", pod.get("runAsNonRoot"))
            user = context.get("runAsUser", pod.get("runAsUser"))
            assert non_root is True and user and user > 0, obj["metadata"]["name"]


SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|AWS_", re.I)


def secret_errors(objects: list[dict], files: dict[str, str]) -> list[str]:
    """Secret values that would be in a file: Secret objects, secret-named variables with a
    literal value, $(VAR) used before VAR is defined (the kubelet would pass it literally),
    a credential in a URL that is not such a reference."""
    errors = [f"Secret {o['metadata']['name']}" for o in objects if o["kind"] == "Secret"]
    containers_ = [c for _, c in _all_containers(objects)]
    containers_ += [{"env": w["env"]} for w in _worker_containers(objects)]
    for container in containers_:
        defined: set[str] = set()
        for item in container.get("env", []):
            if SECRET_NAME.search(item["name"]) and "valueFrom" not in item:
                errors.append(f"{item['name']} has a literal value")
            for used in re.findall(r"\$\(([A-Z_]+)\)", item.get("value", "")):
                if used not in defined:
                    errors.append(f"{item['name']} uses $({used}) before it is defined")
            defined.add(item["name"])
    for path, text in files.items():
        for password in re.findall(r"://[A-Za-z0-9_.-]*:([^@/\s\"']+)@", text):
            if not re.fullmatch(r"\$\([A-Z_]+\)", password):
                errors.append(f"{path}: a password in a URL")
    return errors


@pytest.mark.parametrize(("name", "overlay"), CASES, ids=IDS)
def test_no_secret_value_in_any_file(name, overlay):
    assert secret_errors(built(name, overlay), files_of(name)) == []


def test_the_secret_check_bites():
    objects = built("storefront", "base")
    keys = by_key(objects)
    env = keys[("Deployment", "postgrest")]["spec"]["template"]["spec"]["containers"][0]["env"]
    env.append(env.pop(0))  # the URL now uses $(PGRST_AUTHENTICATOR_PASSWORD) before it is set
    relay = keys[("StatefulSet", "relay")]["spec"]["template"]["spec"]["containers"][0]["env"]
    relay[1] = {"name": "REDIS_PASSWORD", "value": "hunter2"}
    files = {"k8s/x.yaml": "url: postgres://crud_relay:hunter2@postgres-rw/db\n"}
    assert secret_errors(objects, files) == [
        "PGRST_DB_URI uses $(PGRST_AUTHENTICATOR_PASSWORD) before it is defined",
        "REDIS_PASSWORD has a literal value",
        "k8s/x.yaml: a password in a URL",
    ]


@pytest.mark.parametrize("name", EXAMPLES)
def test_what_must_stay_single_stays_single(name):
    for overlay in OVERLAYS:
        objects = by_key(built(name, overlay))
        relay = objects[("StatefulSet", "relay")]
        assert relay["spec"]["replicas"] == 1
        assert objects[("StatefulSet", "redis")]["spec"]["replicas"] == 1
        if ("Deployment", "arroyo") in objects:
            arroyo = objects[("Deployment", "arroyo")]["spec"]
            assert arroyo["replicas"] == 1 and arroyo["strategy"] == {"type": "Recreate"}
        scaled = {o["spec"]["scaleTargetRef"]["name"] for k, o in objects.items()
                  if k[0] == "HorizontalPodAutoscaler"}
        assert scaled <= {"postgrest", "gateway"}
        for target in scaled:
            assert ("Deployment", target) in objects
    assert "StatefulSet, not a Deployment" in files_of(name)["k8s/README.md"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_postgrest_replicas_probes_and_primary(name):
    for overlay, replicas in (("base", 2), ("overlays/prod", 2), ("overlays/dev", 1)):
        objects = by_key(built(name, overlay))
        deployment = objects[("Deployment", "postgrest")]
        assert deployment["spec"]["replicas"] == replicas
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["admin"] == postgrest.ADMIN_PORT == 3001
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "admin"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/live", "port": "admin"}
        assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
        uri = next(e["value"] for e in container["env"] if e["name"] == "PGRST_DB_URI")
        assert "@postgres-rw:5432/" in uri
        has_pdb = ("PodDisruptionBudget", "postgrest") in objects
        assert has_pdb == (overlay != "overlays/dev")
        assert (("HorizontalPodAutoscaler", "postgrest") in objects) == (
            overlay == "overlays/prod")


@pytest.mark.parametrize("name", EXAMPLES)
def test_gateway_serves_sse_through_the_ingress(name):
    objects = by_key(built(name, "overlays/prod"))
    ingress = objects[("Ingress", "gateway")]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    container = objects[("Deployment", "gateway")]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    heartbeat = int(env["CRUD_SSE_HEARTBEAT_MS"]) / 1000
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{key}"]) > heartbeat * 2
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = objects[("Service", backend["name"])]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    # The internal port (publish endpoint, metrics) is not on the Ingress.
    assert backend["port"]["name"] == "http"
    # The ConfigMap holds openresty's own files; only Docker's resolver became the cluster's.
    generated = from_textproto(EXAMPLES_DIR / name / f"{name}.textproto", ["openresty"])
    conf = gateway_conf(list(objects.values()))
    assert conf == generated["openresty/nginx.conf"].replace(services.DOCKER_RESOLVER,
                                                             services.CLUSTER_RESOLVER)
    assert "127.0.0.11" not in conf
    assert env["CRUD_REDIS_HOST"].endswith(".svc.cluster.local")
    lua = next(v for v in objects[("Deployment", "gateway")]["spec"]["template"]["spec"]
               ["volumes"] if v["name"] == "lua")
    lua_map = objects[("ConfigMap", lua["configMap"]["name"])]["data"]
    assert lua_map["crud_gateway.lua"] == generated["openresty/lua/crud_gateway.lua"]
    assert openresty.UPSTREAM_HOST == "crud"


@pytest.mark.parametrize("name", EXAMPLES)
def test_dapr_resources_are_the_dapr_targets(name):
    """Equal to dapr/components/ but for the documented changes: Kubernetes secrets instead
    of the environment store, TLS off, scopes."""
    model = model_of(name)
    objects = built(name, "base")
    ours = {(o["kind"], o["metadata"]["name"]): o for o in objects
            if o["apiVersion"].startswith("dapr.io/")}
    theirs = {(o["kind"], o["metadata"]["name"]): o
              for o in dapr_target.resources(model).values()}
    assert set(theirs) - set(ours) == {("Component", dapr_target.SECRET_STORE)}
    apps = k8s_dapr.app_ids(model)
    for key, resource in ours.items():
        expected = copy.deepcopy(theirs[key])
        expected["metadata"]["labels"] = {"app.kubernetes.io/component": "dapr",
                                          **resource["metadata"]["labels"]}
        if key[0] == "Component":
            expected.pop("auth")
            expected["scopes"] = apps
            for item in expected["spec"]["metadata"]:
                if "secretKeyRef" in item:
                    item["secretKeyRef"]["name"] = common.REDIS_SECRET
                    if item["name"] == "enableTLS":
                        del item["secretKeyRef"]
                        item["value"] = "false"
        elif key[0] == "Resiliency":
            expected["scopes"] = apps  # its policies apply to the apps with sidecars
        assert resource == expected
    subscribers = {s.app_id for e in model.streamed for s in e.subscribers}
    assert set(apps) == {"crud", *subscribers}
    annotations = by_key(objects)[("Deployment", "postgrest")]["spec"]["template"][
        "metadata"]["annotations"]
    assert annotations["dapr.io/enabled"] == "true"
    assert annotations["dapr.io/app-id"] == "crud"


# Arroyo 0.12.1's configuration keys (crates/arroyo-rpc/src/config.rs: every struct is
# `rename_all = "kebab-case", deny_unknown_fields`): a key not here stops Arroyo at start.
ARROYO_KEYS: dict = {
    "api": {"bind-address", "http-port", "run-http-port"},
    "controller": {"bind-address", "rpc-port", "scheduler"},
    "compiler": {"bind-address", "rpc-port", "install-clang", "install-rustc", "artifact-url",
                 "build-dir", "use-local-udf-crate"},
    "node": {"id", "bind-address", "rpc-port", "task-slots"},
    "worker": {"bind-address", "rpc-port", "data-port", "task-slots", "id", "name",
               "queue-size"},
    "admin": {"bind-address", "http-port"},
    "pipeline": None,  # not set here
    "database": {"type": None, "postgres": {"database-name", "host", "port", "user",
                                            "password"},
                 "sqlite": {"path"}},
    "process-scheduler": {"slots-per-process"},
    "kubernetes-scheduler": {
        "namespace": None, "controller": {"apiVersion", "kind", "name", "uid"},
        "resource-mode": None,
        "worker": {"name-prefix", "name", "image", "image-pull-policy", "image-pull-secrets",
                   "service-account-name", "labels", "annotations", "env", "resources",
                   "task-slots", "volumes", "volume-mounts", "command"}},
    "logging": {"format", "nonblocking", "enable-file-line", "enable-file-name",
                "buffered-lines-limit"},
    "checkpoint-url": None, "default-checkpoint-interval": None, "controller-endpoint": None,
    "api-endpoint": None, "compiler-endpoint": None, "run": {"query", "state-dir"},
    "disable-telemetry": None,
}


def arroyo_key_errors(config: dict, allowed: dict | set | None = ARROYO_KEYS,
                      path: str = "") -> list[str]:
    if allowed is None:
        return []
    errors = []
    for key, value in config.items():
        if key not in allowed:
            errors.append(f"{path}{key}")
        elif isinstance(allowed, dict) and isinstance(value, dict):
            errors += arroyo_key_errors(value, allowed[key], f"{path}{key}.")
    return errors


def env_key(variable: str) -> list[str]:
    """`ARROYO__A__B_C` -> ["a", "b-c"] (config.rs: Env::prefixed("ARROYO__"), `__` -> `.`,
    `_` -> `-`)."""
    return [part.lower().replace("_", "-") for part in
            variable.removeprefix("ARROYO__").split("__")]


@pytest.mark.parametrize("name", [n for n in EXAMPLES if model_of(n).rules])
def test_arroyo_reads_every_key_it_is_given(name):
    for overlay in OVERLAYS:
        objects = by_key(built(name, overlay))
        config = yaml.safe_load(objects[("ConfigMap", "arroyo-config")]["data"]["config.yaml"])
        assert arroyo_key_errors(config) == []
        deployment = objects[("Deployment", "arroyo")]["spec"]["template"]["spec"]
        worker = config["kubernetes-scheduler"]["worker"]
        variables = [e["name"] for c in [*deployment["initContainers"],
                                         *deployment["containers"]] for e in c["env"]]
        variables += [e["name"] for e in worker["env"]]
        for variable in {v for v in variables if v.startswith("ARROYO__")}:
            parts = env_key(variable)
            nested: dict = {}
            cursor = nested
            for part in parts[:-1]:
                cursor = cursor.setdefault(part, {})
            cursor[parts[-1]] = "x"
            assert arroyo_key_errors(nested) == [], variable
        assert config["database"]["type"] == "postgres"
        assert config["database"]["postgres"]["host"] == "postgres-rw"
        storage = objects[("ConfigMap", "arroyo-storage")]["data"]
        if overlay == "overlays/dev":
            assert storage["scheduler"] == "process"
            assert storage["checkpoint-url"].startswith("file:///var/lib/arroyo/")
            mounts = deployment["containers"][0]["volumeMounts"]
            assert "/var/lib/arroyo" in {m["mountPath"] for m in mounts}
        else:
            assert storage["scheduler"] == "kubernetes"
            assert storage["checkpoint-url"].startswith("s3://")
        register = next(o for k, o in objects.items() if k[0] == "Job"
                        and k[1].startswith("arroyo-register-"))
        queries = register["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
        generated = from_textproto(EXAMPLES_DIR / name / f"{name}.textproto", ["arroyo"])
        assert objects[("ConfigMap", queries)]["data"] == {
            k.removeprefix("arroyo-queries/"): v for k, v in generated.items()}
    assert arroyo_key_errors({"kubernetes-scheduler": {"worker": {"securityContext": {}}}}) \
        == ["kubernetes-scheduler.worker.securityContext"]
    assert arroyo_key_errors({"database": {"postgres": {"dbname": "x"}}}) == [
        "database.postgres.dbname"]


def test_prod_overlay_takes_the_bucket_as_a_parameter(tmp_path):
    """Editing the one parameter file of the prod overlay moves the checkpoints."""
    source = tree_of("storefront")
    copy_root = tmp_path / "k8s"
    shutil.copytree(source, copy_root)
    env_file = copy_root / "overlays/prod/arroyo-storage.env"
    env_file.write_text(env_file.read_text().replace("CHANGE-ME-bucket", "acme-streams"))
    objects = by_key(build(copy_root / "overlays/prod"))
    storage = objects[("ConfigMap", "arroyo-storage")]["data"]
    assert storage["checkpoint-url"] == "s3://acme-streams/shop/checkpoints"
    assert storage["scheduler"] == "kubernetes"
    assert objects[("Cluster", "postgres")]["spec"]["instances"] == 3
    assert by_key(built("storefront", "overlays/dev"))[("Cluster", "postgres")]["spec"][
        "instances"] == 1


def test_roles_match_what_the_migrations_grant(database, tmp_path):
    """CloudNativePG revokes memberships a role does not declare: the declared roles must
    be exactly the migrations' (attributes and memberships), read back from PostgreSQL."""
    files = from_textproto(EXAMPLES_DIR / "storefront" / "storefront.textproto",
                           ["postgres"])
    done = database.migrate(files, tmp_path)
    assert done.returncode == 0, done.stderr
    cluster = by_key(built("storefront", "base"))[("Cluster", "postgres")]
    # The session's server is shared with other tests, whose databases grant their own roles
    # (e.g. test_auth's "editor") to the same authenticator: memberships in roles this
    # backend does not know belong to them, not to these migrations.
    known = {role["name"] for role in cluster["spec"]["managed"]["roles"]}
    for role in cluster["spec"]["managed"]["roles"]:
        if role["name"] == common.ARROYO_ROLE:
            continue  # CloudNativePG's own: the migrations do not know it
        rows = database.query(
            "SELECT rolcanlogin, rolinherit, rolreplication, rolsuper, rolcreatedb, "
            "rolcreaterole, rolbypassrls, ARRAY(SELECT b.rolname FROM pg_auth_members m "
            "JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = r.oid ORDER BY 1) "
            "FROM pg_roles r WHERE rolname = %s", (role["name"],))
        assert rows, role["name"]
        login, inherit, replication, superuser, createdb, createrole, bypassrls, member = \
            rows[0]
        assert (login, inherit, replication, superuser, createdb, createrole, bypassrls) == (
            role["login"], role["inherit"], role["replication"], role["superuser"],
            role["createdb"], role["createrole"], role["bypassrls"]), role["name"]
        assert sorted(set(member) & known) == sorted(role.get("inRoles", [])), role["name"]


@pytest.mark.parametrize("auth", ["AUTH_TYPE_OAUTH2", "AUTH_TYPE_NONE"])
def test_other_auth_types_build_and_validate(auth, tmp_path):
    extra = ' jwks_url: "https://id.example/jwks"' if auth == "AUTH_TYPE_OAUTH2" else ""
    files = from_text(f"""
        api {{ auth {{ type: {auth}{extra} }} }}
        entity {{ name: "note" fields {{ name: "body" type: SQL_TYPE_TEXT }} }}
    """, targets=["k8s"])
    root = write_tree(files, tmp_path) / "k8s"
    objects = build(root / "overlays/prod")
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in SCHEMAS:
            validate_custom(obj)
        else:
            validate_builtin(obj)
    pod = by_key(objects)[("Deployment", "postgrest")]["spec"]["template"]["spec"]
    env = {e["name"] for e in pod["containers"][0]["env"]}
    assert ("PGRST_JWT_SECRET" in env) is False
    if auth == "AUTH_TYPE_OAUTH2":
        init = pod["initContainers"][0]
        assert init["command"][:2] == ["python", "/etc/crud/jwks.py"]
        assert init["command"][-1] == "https://id.example/jwks"
    else:
        assert "initContainers" not in pod


@pytest.mark.parametrize("name", EXAMPLES)
def test_observability_component_carries_the_generated_rules_and_dashboard(name, tmp_path):
    objects = by_key(built(name, "overlays/prod"))
    generated = from_textproto(EXAMPLES_DIR / name / f"{name}.textproto", ["observability"])
    alerts = objects[("ConfigMap", "crud-alerts")]["data"]["alerts.yml"]
    assert alerts == generated["observability/prometheus/alerts.yml"]
    dashboard = next(v for k, v in generated.items() if k.endswith(".json"))
    assert list(objects[("ConfigMap", "crud-dashboards")]["data"].values()) == [dashboard]
    promtool = shutil.which("promtool")
    if promtool:
        (tmp_path / "alerts.yml").write_text(alerts)
        done = subprocess.run([promtool, "check", "rules", str(tmp_path / "alerts.yml")],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    for kind, workload, port in (("Deployment", "gateway", openresty.METRICS_PORT),
                                 ("Deployment", "postgrest", postgrest.ADMIN_PORT),
                                 ("StatefulSet", "relay", 9464)):
        template = objects[(kind, workload)]["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == port
        assert port in {
            p["containerPort"] for c in template["spec"]["containers"] for p in c["ports"]}
    dev = by_key(built(name, "overlays/dev"))
    assert ("ConfigMap", "crud-alerts") not in dev


ENDPOINT = re.compile(r"""(https?|redis|postgres)://(?:[^@/\s"']*@)?([a-z0-9_.-]+)(?::(\d+))?""")


def endpoint_errors(objects: list[dict], files: dict[str, str], external: set[str]) -> list[str]:
    """Every in-cluster address a generated file names (nginx upstreams, Arroyo's source and
    sinks, registration, Dapr's endpoints and Redis host, connection URLs) is a Service
    with that port; `postgres-rw` is CloudNativePG's Service of the Cluster `postgres`.
    External hosts (with a dot, or a user's webhook host from the model) are not ours."""
    service_ports = {o["metadata"]["name"]: {p["port"] for p in o["spec"]["ports"]}
                     for o in objects if o["kind"] == "Service"}
    if ("Cluster", common.CLUSTER) in by_key(objects):
        service_ports[common.PRIMARY] = {common.PG_PORT}
    upstreams = {name for text in files.values()
                 for name in re.findall(r"^\s*upstream\s+(\S+)\s*\{", text, re.M)}
    addresses = set()
    for text in files.values():
        for scheme, host, port in ENDPOINT.findall(text):
            default = {"http": 80, "https": 443, "redis": 6379, "postgres": 5432}[scheme]
            addresses.add((host, int(port or default)))
        # nginx's upstream servers
        addresses |= {(h, int(p)) for h, p in
                      re.findall(r"^\s*server\s+([a-z0-9_.-]+):(\d+)", text, re.M)}
    for obj in objects:
        if obj["kind"] == "HTTPEndpoint":
            _, host, port = ENDPOINT.findall(obj["spec"]["baseUrl"])[0]
            addresses.add((host, int(port or 80)))
        if obj["kind"] == "Component":
            for item in obj["spec"]["metadata"]:
                if item["name"] == "redisHost":
                    host, _, port = item["value"].partition(":")
                    addresses.add((host, int(port)))
    errors = []
    for host, port in sorted(addresses):
        if "." in host or host == "localhost" or host in external | upstreams:
            continue
        if port not in service_ports.get(host, set()):
            errors.append(f"{host}:{port} is no Service port")
    return errors


def _external_hosts(name: str) -> set[str]:
    from urllib.parse import urlparse

    return {urlparse(rule.webhook_url).hostname for rule in model_of(name).rules
            if rule.webhook_url}


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_address_a_generated_file_names_is_a_service(name):
    for overlay in OVERLAYS:
        objects = built(name, overlay)
        data = {f"{o['metadata']['name']}/{k}": v for o in objects if o["kind"] == "ConfigMap"
                for k, v in o["data"].items()}
        env = {f"{o['metadata']['name']}/{c['name']}/{e['name']}": e["value"]
               for o in objects for c in containers(o) for e in c.get("env", [])
               if "value" in e}
        texts = {**data, **env}
        assert endpoint_errors(objects, texts, _external_hosts(name)) == []
        # What was checked includes the gateway, PostgREST and Redis by name.
        found = {host for text in texts.values() for _, host, _ in ENDPOINT.findall(text)}
        assert {"redis", "postgres-rw"} <= found
        assert "server crud:3000;" in data[next(k for k in data if k.endswith("/nginx.conf"))]


def test_the_address_check_bites():
    objects = built("storefront", "base")
    keys = by_key(objects)
    keys[("Service", "proxy")]["metadata"]["name"] = "gateway"
    keys[("Service", "arroyo")]["spec"]["ports"][0]["port"] = 8080
    keys[("Service", "crud")]["metadata"]["name"] = "postgrest"
    texts = {"a": "url: http://proxy/stream/sse/product", "b": "http://arroyo:5115/api/v1",
             "c": "http://analytics:8080/x"}
    assert endpoint_errors(objects, texts, {"analytics"}) == [
        "arroyo:5115 is no Service port", "crud:3000 is no Service port",
        "proxy:80 is no Service port"]


@pytest.mark.parametrize("name", ["storefront", "article"])
def test_both_front_doors_give_the_same_k8s_folder(name, tmp_path):
    """Through protoc with `target=k8s` as through the textproto (test_generation compares
    the whole tree of every example as well)."""
    done = protoc(EXAMPLES_DIR / name / f"{name}.proto", tmp_path, parameter="target=k8s")
    assert done.returncode == 0, done.stderr
    via_protoc = read_tree(tmp_path)
    assert via_protoc == files_of(name)
    assert any(p.startswith("k8s/base/migrations/files/") for p in via_protoc)
