"""Resiliency and HTTPEndpoint as daprd 1.14.4's Go types read them, as strict JSON Schemas.

Dapr's CRD schemas in ../shared/reference/dapr do not close the objects of these two kinds
(an unknown key passes), and they come from a later Dapr (the Resiliency CRD there has
controller-gen v0.16.2 and `retries.*.matching`, a field Dapr first has in v1.15.0). daprd
reads both kinds with sigs.k8s.io/yaml into the Go structs below — self-hosted
pkg/resiliency/resiliency.go:30,244 and pkg/internal/loader/disk/manifest.go:28,140;
from the operator resiliency.go:273 — which drops every key the structs lack without a word.
So each schema here lists exactly the json tags of those structs, at every level, and says
`additionalProperties: false` on every struct; maps (`map[string]T`) take any key.

Sources (the Go struct, file and lines; every field is the json tag's name):

- dapr v1.14.4 pkg/apis/resiliency/v1alpha1/types.go
  Resiliency 26-34 (TypeMeta inline, metadata ObjectMeta, spec, scopes []string),
  ResiliencySpec 42-45, Policies 47-51 (timeouts map[string]string, retries
  map[string]Retry, circuitBreakers map[string]CircuitBreaker), Retry 53-58 (policy,
  duration, maxInterval string; maxRetries *int), CircuitBreaker 60-65 (maxRequests int;
  interval, timeout, trip string), Targets 67-71 (apps map[string]EndpointPolicyNames,
  actors map[string]ActorPolicyNames, components map[string]ComponentPolicyNames),
  ComponentPolicyNames 73-76 (inbound, outbound PolicyNames), PolicyNames 78-82,
  EndpointPolicyNames 84-89, ActorPolicyNames 91-97.
- dapr v1.14.4 pkg/apis/httpEndpoint/v1alpha1/types.go
  HTTPEndpoint 35-44 (TypeMeta inline, metadata ObjectMeta, spec, `Auth` embedded under the
  explicit tag `auth`, common.Scoped inline), HTTPEndpointSpec 133-139 (baseUrl string,
  headers []NameValuePair, clientTLS *TLS), Auth 142-144 (secretStore string).
- dapr v1.14.4 pkg/apis/common: scoped.go Scoped 19-22 (scopes []string); namevalue.go
  NameValuePair 25-37 (name string, value DynamicValue, secretKeyRef SecretKeyRef, envRef
  string), SecretKeyRef 54-60 (name, key string), DynamicValue 65-67 (apiextensions v1 JSON
  inline: any JSON value); tls.go TLSDocument 19-26 (value *DynamicValue, secretKeyRef
  *SecretKeyRef), TLS 29-40 (rootCA, certificate, privateKey *TLSDocument; renegotiation
  *Renegotiation, kubebuilder enum Never/OnceAsClient/FreelyAsClient, 37), Renegotiation
  43-49.
- apiVersion: GroupName "dapr.io" (pkg/apis/resiliency/register.go:18,
  pkg/apis/httpEndpoint/register.go:17) + "/v1alpha1"; the self-hosted loader skips a
  manifest whose apiVersion/kind differ (manifest.go:130; resiliency.go:239 checks the kind).
- k8s.io/apimachinery v0.30.2 (dapr v1.14.4 go.mod:77) pkg/apis/meta/v1/types.go:
  TypeMeta 42-57 (kind, apiVersion), ObjectMeta 111-276 (name, generateName, namespace,
  selfLink, uid, resourceVersion, generation int64, creationTimestamp Time,
  deletionTimestamp *Time, deletionGracePeriodSeconds *int64, labels and annotations
  map[string]string, ownerReferences, finalizers []string, managedFields; clusterName is
  commented out, 263), OwnerReference 295-320, ManagedFieldsEntry 1283-1320; time.go:98-110
  (a Time is an RFC 3339 string, or null).

Required fields: those Dapr's own CRD generator makes required — a json tag without
`omitempty` and without `+optional` (ResiliencySpec.policies/targets, HTTPEndpointSpec
.baseUrl, Auth.secretStore, NameValuePair.name, SecretKeyRef.name) — plus metadata.name,
which Kubernetes requires and by which daprd names the resource.

Stricter than Go's encoding/json on purpose: key names must match the tag exactly (Go folds
case; the API server's pruning does not), and `null` is refused except for a Time (Go
leaves a field at its zero value on null; the generated files never mean that). A Go int
takes only a JSON integer within int64 (encoding/json refuses 1.0 and "1"), so the checker
below counts a bool or a float as no integer.
"""

from __future__ import annotations

import jsonschema

API_VERSION = "dapr.io/v1alpha1"

STRING = {"type": "string"}
INT = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}  # Go int, int64
BOOL = {"type": "boolean"}
ANY: dict = {}  # common.DynamicValue: apiextensions v1 JSON, any JSON value
TIME = {"type": ["string", "null"]}  # metav1.Time (time.go:98-110)


def struct(fields: dict, required: tuple[str, ...] = ()) -> dict:
    """A Go struct: exactly these json names, nothing else."""
    return {"type": "object", "properties": fields, "additionalProperties": False,
            "required": list(required)}


def map_of(value: dict) -> dict:
    """map[string]T."""
    return {"type": "object", "additionalProperties": value}


def list_of(item: dict) -> dict:
    """[]T."""
    return {"type": "array", "items": item}


STRINGS = list_of(STRING)
STRING_MAP = map_of(STRING)

# ------------------------------------------------- k8s.io/apimachinery v0.30.2 meta/v1
OWNER_REFERENCE = struct({  # types.go:295-320
    "apiVersion": STRING, "kind": STRING, "name": STRING, "uid": STRING,
    "controller": BOOL, "blockOwnerDeletion": BOOL,
}, required=("apiVersion", "kind", "name", "uid"))
MANAGED_FIELDS_ENTRY = struct({  # types.go:1283-1320
    "manager": STRING, "operation": STRING, "apiVersion": STRING, "time": TIME,
    "fieldsType": STRING, "fieldsV1": {"type": "object"}, "subresource": STRING,
})
OBJECT_META = struct({  # types.go:111-276
    "name": STRING, "generateName": STRING, "namespace": STRING, "selfLink": STRING,
    "uid": STRING, "resourceVersion": STRING, "generation": INT,
    "creationTimestamp": TIME, "deletionTimestamp": TIME,
    "deletionGracePeriodSeconds": INT, "labels": STRING_MAP, "annotations": STRING_MAP,
    "ownerReferences": list_of(OWNER_REFERENCE), "finalizers": STRINGS,
    "managedFields": list_of(MANAGED_FIELDS_ENTRY),
}, required=("name",))


def _type_meta(kind: str) -> dict:
    """TypeMeta (types.go:42-57), pinned to the group/version and kind daprd loads."""
    return {"apiVersion": {"type": "string", "const": API_VERSION},
            "kind": {"type": "string", "const": kind}}


# ------------------------------------------ dapr v1.14.4 pkg/apis/resiliency/v1alpha1
RETRY = struct({  # types.go:53-58
    "policy": STRING, "duration": STRING, "maxInterval": STRING, "maxRetries": INT,
})
CIRCUIT_BREAKER = struct({  # types.go:60-65
    "maxRequests": INT, "interval": STRING, "timeout": STRING, "trip": STRING,
})
POLICIES = struct({  # types.go:47-51
    "timeouts": STRING_MAP, "retries": map_of(RETRY),
    "circuitBreakers": map_of(CIRCUIT_BREAKER),
})
POLICY_NAMES = struct({  # types.go:78-82
    "timeout": STRING, "retry": STRING, "circuitBreaker": STRING,
})
COMPONENT_POLICY_NAMES = struct({  # types.go:73-76
    "inbound": POLICY_NAMES, "outbound": POLICY_NAMES,
})
ENDPOINT_POLICY_NAMES = struct({  # types.go:84-89
    "timeout": STRING, "retry": STRING, "circuitBreaker": STRING,
    "circuitBreakerCacheSize": INT,
})
ACTOR_POLICY_NAMES = struct({  # types.go:91-97
    "timeout": STRING, "retry": STRING, "circuitBreaker": STRING,
    "circuitBreakerScope": STRING, "circuitBreakerCacheSize": INT,
})
TARGETS = struct({  # types.go:67-71
    "apps": map_of(ENDPOINT_POLICY_NAMES), "actors": map_of(ACTOR_POLICY_NAMES),
    "components": map_of(COMPONENT_POLICY_NAMES),
})
RESILIENCY_SPEC = struct({  # types.go:42-45
    "policies": POLICIES, "targets": TARGETS,
}, required=("policies", "targets"))
RESILIENCY = struct({  # types.go:26-34
    **_type_meta("Resiliency"), "metadata": OBJECT_META, "spec": RESILIENCY_SPEC,
    "scopes": STRINGS,
}, required=("apiVersion", "kind", "metadata", "spec"))

# ------------------------------------------------------------ dapr v1.14.4 pkg/apis/common
SECRET_KEY_REF = struct({  # namevalue.go:54-60
    "name": STRING, "key": STRING,
}, required=("name",))
NAME_VALUE_PAIR = struct({  # namevalue.go:25-37
    "name": STRING, "value": ANY, "secretKeyRef": SECRET_KEY_REF, "envRef": STRING,
}, required=("name",))
TLS_DOCUMENT = struct({  # tls.go:19-26
    "value": ANY, "secretKeyRef": SECRET_KEY_REF,
})
TLS = struct({  # tls.go:29-40; Renegotiation 43-49, enum marker 37
    "rootCA": TLS_DOCUMENT, "certificate": TLS_DOCUMENT, "privateKey": TLS_DOCUMENT,
    "renegotiation": {"type": "string", "enum": ["Never", "OnceAsClient", "FreelyAsClient"]},
})

# ---------------------------------------- dapr v1.14.4 pkg/apis/httpEndpoint/v1alpha1
HTTP_ENDPOINT_SPEC = struct({  # types.go:133-139
    "baseUrl": STRING, "headers": list_of(NAME_VALUE_PAIR), "clientTLS": TLS,
}, required=("baseUrl",))
AUTH = struct({"secretStore": STRING}, required=("secretStore",))  # types.go:142-144
HTTP_ENDPOINT = struct({  # types.go:35-44; scopes: common.Scoped (scoped.go:19-22)
    **_type_meta("HTTPEndpoint"), "metadata": OBJECT_META, "spec": HTTP_ENDPOINT_SPEC,
    "auth": AUTH, "scopes": STRINGS,
}, required=("apiVersion", "kind", "metadata", "spec"))

SCHEMAS = {
    (API_VERSION, "Resiliency"): RESILIENCY,
    (API_VERSION, "HTTPEndpoint"): HTTP_ENDPOINT,
}


def _is_go_int(_checker, value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


Validator = jsonschema.validators.extend(
    jsonschema.Draft7Validator,
    type_checker=jsonschema.Draft7Validator.TYPE_CHECKER.redefine("integer", _is_go_int))


def _schema_of(obj: dict) -> dict:
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in SCHEMAS:
        raise jsonschema.ValidationError(f"not a Resiliency or HTTPEndpoint of {API_VERSION}: "
                                         f"{key}")
    return SCHEMAS[key]


def errors(obj: dict) -> list[str]:
    """Every place `obj` leaves Dapr 1.14.4's types, as `path: message`."""
    found = Validator(_schema_of(obj)).iter_errors(obj)
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
                  for e in found)


def validate(obj: dict) -> None:
    """Raise jsonschema.ValidationError, listing every violation, unless `obj` is a
    Resiliency or HTTPEndpoint exactly as Dapr 1.14.4's types define it."""
    found = errors(obj)
    if found:
        raise jsonschema.ValidationError(
            f"{obj.get('kind')} {obj.get('metadata', {}).get('name')!r}: " + "; ".join(found))
