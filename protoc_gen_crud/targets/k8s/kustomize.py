"""The kustomize layout: base folders with their kustomizations, the observability
component and the dev and prod overlays. Everything is data dumped as YAML; kustomize only
assembles it (`kubectl apply -k k8s/overlays/prod`), no templating at apply time.
"""

from __future__ import annotations

from ...model import Backend
from ...rendering import dump_yaml
from .. import observability
from ..openresty import METRICS_PORT as GATEWAY_METRICS_PORT
from ..postgrest import ADMIN_PORT as POSTGREST_ADMIN_PORT
from ..relay import METRICS_PORT as RELAY_METRICS_PORT
from . import arroyo
from . import common as c

KUSTOMIZATION = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
COMPONENT = {"apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component"}
CNPG_METRICS_PORT = 9187  # CloudNativePG's instance exporter
HPA_MAX = {"postgrest": 10, "gateway": 10}


def file_name(resource: dict) -> str:
    return f"{resource['kind'].lower()}-{resource['metadata']['name']}.yaml"


def folder_kustomization(objects: list[dict], generators: list[dict]) -> dict:
    found: dict = {**KUSTOMIZATION, "resources": sorted(file_name(o) for o in objects)}
    if generators:
        found["configMapGenerator"] = generators
    return found


def base_kustomization(backend: Backend, folders: list[str]) -> dict:
    return {**KUSTOMIZATION, "resources": folders,
            "labels": [{"pairs": {"app.kubernetes.io/part-of": c.part_of(backend),
                                  "app.kubernetes.io/managed-by": "protoc-gen-crud"},
                        "includeSelectors": False}]}


def storage_generator(values: dict[str, str], behavior: str = "create") -> dict:
    """`arroyo-storage` without a hash suffix: Arroyo's own config names it (worker env)."""
    generator: dict = {"name": arroyo.STORAGE,
                       "literals": [f"{k}={v}" for k, v in values.items()],
                       "options": {"disableNameSuffixHash": True}}
    if behavior != "create":
        generator["behavior"] = behavior
    return generator


# ------------------------------------------------------------------ observability
def _scrape(port: int, path: str = "/metrics") -> dict[str, str]:
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
            "prometheus.io/path": path}


def _pod_annotations(kind: str, name: str, annotations: dict[str, str]) -> dict:
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name},
            "spec": {"template": {"metadata": {"annotations": annotations}}}}


def observability_component(backend: Backend) -> dict[str, object]:
    """Scrape annotations on every pod that exports metrics, the generated alert rules and
    dashboard as ConfigMaps (Prometheus's rule file; Grafana's dashboard sidecar label), and
    a Prometheus scrape job that honours the annotations."""
    generated = observability.render(backend)
    alerts_text = generated[f"{observability.FOLDER}/prometheus/alerts.yml"]
    dashboard_path = next(p for p in generated if p.endswith(".json"))
    patches = {
        "patch-gateway.yaml": _pod_annotations("Deployment", "gateway",
                                               _scrape(GATEWAY_METRICS_PORT)),
        "patch-postgrest.yaml": _pod_annotations("Deployment", "postgrest",
                                                 _scrape(POSTGREST_ADMIN_PORT)),
        "patch-relay.yaml": _pod_annotations("StatefulSet", "relay",
                                             _scrape(RELAY_METRICS_PORT)),
        "patch-postgres.yaml": {
            "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
            "metadata": {"name": c.CLUSTER},
            "spec": {"inheritedMetadata": {"annotations": _scrape(CNPG_METRICS_PORT)}}},
    }
    if backend.rules:
        patches["patch-arroyo.yaml"] = _pod_annotations(
            "Deployment", "arroyo", _scrape(observability.ARROYO_ADMIN_PORT))
    scrape = {"scrape_configs": [{
        "job_name": "kubernetes-pods",
        "kubernetes_sd_configs": [{"role": "pod"}],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
             "action": "keep", "regex": "true"},
            {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
             "action": "replace", "target_label": "__metrics_path__", "regex": "(.+)"},
            {"source_labels": ["__address__",
                               "__meta_kubernetes_pod_annotation_prometheus_io_port"],
             "action": "replace", "regex": "([^:]+)(?::\\d+)?;(\\d+)",
             "replacement": "$1:$2", "target_label": "__address__"},
            {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
             "target_label": "job"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ],
    }]}
    scrape_map = c.config_map("crud-scrape", "observability", {"scrape.yml": dump_yaml(scrape)})
    generated_maps = [
        c.config_map_files("crud-alerts", "observability", {"alerts.yml": alerts_text}),
        c.config_map_files("crud-dashboards", "observability", {
            dashboard_path.rsplit("/", 1)[1]: generated[dashboard_path]}),
    ]
    generators = [m.generator() for m in generated_maps]
    generators[1]["options"]["labels"]["grafana_dashboard"] = "1"  # Grafana's sidecar
    files: dict[str, object] = {file_name(scrape_map): scrape_map}
    for found in generated_maps:
        files.update({f"{c.FILES}/{key}": text for key, text in found.files})
    files.update(patches)
    files["kustomization.yaml"] = {
        **COMPONENT,
        "resources": [file_name(scrape_map)],
        "configMapGenerator": generators,
        "patches": [{"path": name} for name in sorted(patches)],
    }
    return files


# ------------------------------------------------------------------------ overlays
def _replicas(kind: str, name: str, count: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name},
            "spec": {"replicas": count}}


def _delete(api: str, kind: str, name: str) -> dict:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name}, "$patch": "delete"}


def _images(backend: Backend) -> list[dict]:
    # Where the relay image built from relay/ was pushed: edit newName.
    return [{"name": c.relay_image(backend).split(":")[0],
             "newName": "registry.example.com/crud-relay",
             "newTag": c.relay_image(backend).split(":")[1]}]


def dev_overlay(backend: Backend) -> dict[str, object]:
    """One instance of everything, no disruption budgets, Arroyo's workers as processes
    of its pod with checkpoints on a volume."""
    files: dict[str, object] = {
        "patch-postgrest.yaml": _replicas("Deployment", "postgrest", 1),
        "patch-gateway.yaml": _replicas("Deployment", "gateway", 1),
        "delete-pdb-postgrest.yaml": _delete("policy/v1", "PodDisruptionBudget", "postgrest"),
        "delete-pdb-gateway.yaml": _delete("policy/v1", "PodDisruptionBudget", "gateway"),
    }
    resources = ["../../base"]
    generators = []
    if backend.rules:
        claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": c.metadata("arroyo-data", "arroyo"),
                 "spec": {"accessModes": ["ReadWriteOnce"],
                          "resources": {"requests": {"storage": "5Gi"}}}}
        files[file_name(claim)] = claim
        resources.append(file_name(claim))
        files["patch-arroyo.yaml"] = {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "arroyo"},
            "spec": {"template": {"spec": {
                "containers": [{"name": "arroyo", "volumeMounts": [
                    {"name": "data", "mountPath": "/var/lib/arroyo"}]}],
                "volumes": [{"name": "data",
                             "persistentVolumeClaim": {"claimName": "arroyo-data"}}]}}}}
        generators.append(storage_generator({
            "scheduler": "process",
            "checkpoint-url": "file:///var/lib/arroyo/checkpoints",
            "artifact-url": "file:///var/lib/arroyo/artifacts"}, behavior="merge"))
    kustomization: dict = {**KUSTOMIZATION, "resources": resources,
                           "patches": [{"path": p} for p in sorted(files)
                                       if p.startswith(("patch-", "delete-"))]}
    if generators:
        kustomization["configMapGenerator"] = generators
    kustomization["images"] = _images(backend)
    files["kustomization.yaml"] = kustomization
    return files


def _hpa(name: str, maximum: int) -> dict:
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": c.metadata(name, name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 2, "maxReplicas": maximum,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}],
        },
    }


PROD_STORAGE_FILE = "arroyo-storage.env"


def prod_storage(backend: Backend) -> str:
    """The prod overlay's parameter file: the bucket (and URL) of Arroyo's checkpoints."""
    part = c.part_of(backend)
    return "\n".join([
        "# Arroyo's checkpoints and artifacts in object storage: put your bucket here.",
        "# Credentials: the pod's cloud identity, or the Secret "
        f"{c.OBJECT_STORAGE_SECRET} (k8s/README.md).",
        f"checkpoint-url=s3://CHANGE-ME-bucket/{part}/checkpoints",
        f"artifact-url=s3://CHANGE-ME-bucket/{part}/artifacts",
    ]) + "\n"


def prod_overlay(backend: Backend) -> dict[str, object]:
    """Three PostgreSQL instances (a synchronous-capable primary and two standbys),
    autoscaled PostgREST and gateways, disruption budgets (from the base), observability,
    and Arroyo's checkpoints in object storage."""
    hpas = [_hpa(name, maximum) for name, maximum in HPA_MAX.items()]
    files: dict[str, object] = {file_name(h): h for h in hpas}
    files["patch-postgres.yaml"] = {
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": c.CLUSTER},
        "spec": {"instances": 3, "storage": {"size": "50Gi"},
                 "resources": c.resources("1", "4Gi", "4", "8Gi")}}
    kustomization: dict = {
        **KUSTOMIZATION,
        "resources": ["../../base", *sorted(file_name(h) for h in hpas)],
        "components": ["../../components/observability"],
        "patches": [{"path": "patch-postgres.yaml"}],
    }
    if backend.rules:
        files[PROD_STORAGE_FILE] = prod_storage(backend)
        generator = storage_generator({}, behavior="merge")
        generator.pop("literals")
        generator["envs"] = [PROD_STORAGE_FILE]
        kustomization["configMapGenerator"] = [generator]
    kustomization["images"] = _images(backend)
    files["kustomization.yaml"] = kustomization
    return files
