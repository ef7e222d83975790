"""`make k8s-validate`: render every kustomization and check it, offline, without a cluster.

1. `kubectl kustomize` renders base/ and each overlay (kubectl >= 1.27 has kustomize built in).
2. Every built-in object is validated against the Kubernetes OpenAPI schemas bundled in the
   `kubernetes-validate` package (strict: unknown fields are errors), for KUBERNETES_VERSION.
3. Custom resources (Strimzi Kafka/KafkaNodePool/KafkaTopic/KafkaUser, MongoDBCommunity,
   ServiceMonitor, PrometheusRule) are checked for the fields their operators require, and
   for what they point at (a topic's cluster, a ServiceMonitor's Services and ports); a
   PrometheusRule's groups also go through `promtool check rules` where promtool is installed.
The policies (probes, limits, network, configuration) are pytest tests: tests/deploy/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
TARGETS = {"base": HERE / "base", "dev": HERE / "overlays" / "dev", "prod": HERE / "overlays" / "prod"}
KUBERNETES_VERSION = "1.32"
KUBECTL_MISSING = (
    "kubectl not found on PATH: `make k8s-validate` renders the manifests with `kubectl kustomize` "
    "(kubectl 1.27 or later; kustomize is built in). Install kubectl, e.g. from the Kubernetes "
    "apt repository (package kubectl), and run it again."
)


class KubectlMissing(RuntimeError):
    pass


def kubectl() -> str:
    path = shutil.which("kubectl")
    if not path:
        raise KubectlMissing(KUBECTL_MISSING)
    return path


def render(target: str | Path) -> list[dict]:
    directory = TARGETS.get(str(target), Path(target))
    proc = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed:\n{proc.stderr}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def name_of(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def is_builtin(obj: dict) -> bool:
    group = obj["apiVersion"].rpartition("/")[0]
    return group == "" or "." not in group or group.endswith(".k8s.io")


def validate_builtin(objects: Iterable[dict]) -> list[str]:
    import kubernetes_validate

    errors = []
    for obj in objects:
        if not is_builtin(obj):
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{name_of(obj)}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{name_of(obj)}: {exc.message}")
    return errors


# --- custom resources: the fields their operators require ---------------------------------


def _get(obj: dict, dotted: str):
    node = obj
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _require(obj: dict, paths: Iterable[str]) -> list[str]:
    return [f"{name_of(obj)}: {p} is required" for p in paths if _get(obj, p) in (None, "", [], {})]


def check_kafka(obj: dict, _all: list[dict]) -> list[str]:
    errors = _require(obj, ["spec.kafka.listeners", "spec.kafka.version"])
    for i, listener in enumerate(_get(obj, "spec.kafka.listeners") or []):
        errors += [
            f"{name_of(obj)}: spec.kafka.listeners[{i}].{k} is required"
            for k in ("name", "port", "type", "tls")
            if k not in listener
        ]
        authentication = _get(listener, "authentication.type")
        if authentication is not None and authentication not in LISTENER_AUTHENTICATION:
            errors.append(
                f"{name_of(obj)}: spec.kafka.listeners[{i}].authentication.type {authentication!r} "
                f"is not one of {sorted(LISTENER_AUTHENTICATION)}"
            )
    authorization = _get(obj, "spec.kafka.authorization.type")
    if authorization is not None and authorization not in ("simple", "opa", "keycloak", "custom"):
        errors.append(f"{name_of(obj)}: spec.kafka.authorization.type {authorization!r} is unknown")
    annotations = obj["metadata"].get("annotations", {})
    if annotations.get("strimzi.io/kraft") == "enabled":
        if annotations.get("strimzi.io/node-pools") != "enabled":
            errors.append(f"{name_of(obj)}: KRaft needs the annotation strimzi.io/node-pools: enabled")
        pools = [
            o
            for o in _all
            if o["kind"] == "KafkaNodePool"
            and o["metadata"].get("labels", {}).get("strimzi.io/cluster") == obj["metadata"]["name"]
        ]
        roles = {r for p in pools for r in p["spec"].get("roles", [])}
        if not {"controller", "broker"} <= roles:
            errors.append(f"{name_of(obj)}: KRaft needs KafkaNodePools with controller and broker roles")
    elif not _get(obj, "spec.zookeeper"):
        errors.append(f"{name_of(obj)}: without KRaft, spec.zookeeper is required")
    return errors


def check_node_pool(obj: dict, _all: list[dict]) -> list[str]:
    errors = _require(obj, ["spec.replicas", "spec.roles", "spec.storage.type"])
    if not obj["metadata"].get("labels", {}).get("strimzi.io/cluster"):
        errors.append(f"{name_of(obj)}: the label strimzi.io/cluster is required")
    return errors


def check_topic(obj: dict, objects: list[dict]) -> list[str]:
    errors = _require(obj, ["spec.partitions", "spec.replicas"])
    cluster = obj["metadata"].get("labels", {}).get("strimzi.io/cluster")
    if not cluster:
        errors.append(f"{name_of(obj)}: the label strimzi.io/cluster is required")
    clusters = {o["metadata"]["name"] for o in objects if o["kind"] == "Kafka"}
    if clusters and cluster not in clusters:
        errors.append(f"{name_of(obj)}: cluster {cluster!r} is not defined here ({sorted(clusters)})")
    if not isinstance(_get(obj, "spec.partitions"), int) or obj["spec"]["partitions"] < 1:
        errors.append(f"{name_of(obj)}: spec.partitions must be a positive integer")
    return errors


LISTENER_AUTHENTICATION = {"tls", "scram-sha-512", "oauth", "custom"}
USER_AUTHENTICATION = {"tls", "tls-external", "scram-sha-512"}
ACL_RESOURCES = {"topic", "group", "cluster", "transactionalId"}
ACL_OPERATIONS = {
    "Read",
    "Write",
    "Create",
    "Delete",
    "Alter",
    "Describe",
    "ClusterAction",
    "AlterConfigs",
    "DescribeConfigs",
    "IdempotentWrite",
    "All",
}


def check_user(obj: dict, objects: list[dict]) -> list[str]:
    """A KafkaUser the user operator accepts: its cluster is defined here and authenticates and
    authorizes users the way the user asks; every ACL names a known resource and operations."""
    errors = _require(obj, ["spec.authentication.type"])
    if _get(obj, "spec.authentication.type") not in USER_AUTHENTICATION | {None}:
        errors.append(f"{name_of(obj)}: spec.authentication.type must be one of {sorted(USER_AUTHENTICATION)}")
    cluster = obj["metadata"].get("labels", {}).get("strimzi.io/cluster")
    kafka = next((o for o in objects if o["kind"] == "Kafka" and o["metadata"]["name"] == cluster), None)
    if kafka is None:
        if any(o["kind"] == "Kafka" for o in objects):
            errors.append(f"{name_of(obj)}: cluster {cluster!r} is not defined here")
        return errors
    listeners = {_get(listener, "authentication.type") for listener in _get(kafka, "spec.kafka.listeners") or []}
    if (authentication := _get(obj, "spec.authentication.type")) not in listeners:
        errors.append(f"{name_of(obj)}: no listener of {cluster} authenticates by {authentication}")
    if _get(obj, "spec.authorization.type") == "simple" and _get(kafka, "spec.kafka.authorization.type") != "simple":
        errors.append(f"{name_of(obj)}: its ACLs need spec.kafka.authorization.type: simple on {cluster}")
    for i, rule in enumerate(_get(obj, "spec.authorization.acls") or []):
        where = f"{name_of(obj)}: spec.authorization.acls[{i}]"
        kind, operations = _get(rule, "resource.type"), rule.get("operations") or []
        if kind not in ACL_RESOURCES or (kind != "cluster" and not _get(rule, "resource.name")):
            errors.append(f"{where}.resource needs a type among {sorted(ACL_RESOURCES)} and, but for cluster, a name")
        if not operations or not set(operations) <= ACL_OPERATIONS:
            errors.append(f"{where}.operations must be among {sorted(ACL_OPERATIONS)}")
    return errors


def check_mongodb(obj: dict, _all: list[dict]) -> list[str]:
    errors = _require(
        obj, ["spec.members", "spec.type", "spec.version", "spec.security.authentication.modes", "spec.users"]
    )
    if obj["spec"].get("type") not in ("ReplicaSet",):
        errors.append(f"{name_of(obj)}: spec.type must be ReplicaSet")
    for i, user in enumerate(obj["spec"].get("users") or []):
        for key in ("name", "db", "passwordSecretRef.name", "roles", "scramCredentialsSecretName"):
            if _get(user, key) in (None, "", []):
                errors.append(f"{name_of(obj)}: spec.users[{i}].{key} is required")
        for role in user.get("roles") or []:
            if not role.get("name") or not role.get("db"):
                errors.append(f"{name_of(obj)}: spec.users[{i}] roles need name and db")
    return errors


def _selects(selector: dict, labels: dict) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        present, value = expr["key"] in labels, labels.get(expr["key"])
        ok = {
            "In": present and value in expr.get("values", []),
            "NotIn": not present or value not in expr.get("values", []),
            "Exists": present,
            "DoesNotExist": not present,
        }[expr["operator"]]
        if not ok:
            return False
    return True


def check_service_monitor(obj: dict, objects: list[dict]) -> list[str]:
    errors = _require(obj, ["spec.selector", "spec.endpoints"])
    services = [
        o
        for o in objects
        if o["kind"] == "Service" and _selects(obj["spec"].get("selector", {}), o["metadata"].get("labels", {}))
    ]
    if not services:
        errors.append(f"{name_of(obj)}: its selector matches no Service")
    ports = {p.get("name") for s in services for p in s["spec"].get("ports", [])}
    for i, endpoint in enumerate(obj["spec"].get("endpoints") or []):
        if not endpoint.get("port") and not endpoint.get("targetPort"):
            errors.append(f"{name_of(obj)}: spec.endpoints[{i}] needs port or targetPort")
        elif endpoint.get("port") and endpoint["port"] not in ports:
            errors.append(f"{name_of(obj)}: spec.endpoints[{i}].port {endpoint['port']!r} is on no selected Service")
    return errors


DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")  # Prometheus' duration syntax
SEVERITIES = ("critical", "warning", "info")


def _balanced(expr: str) -> bool:
    depth, pairs = [], {")": "(", "]": "[", "}": "{"}
    for char in re.sub(r'"(\\.|[^"\\])*"', '""', expr):  # brackets inside label values do not count
        if char in "([{":
            depth.append(char)
        elif char in pairs and (not depth or depth.pop() != pairs[char]):
            return False
    return not depth


def check_prometheus_rule(obj: dict, _all: list[dict]) -> list[str]:
    """What the Prometheus Operator and Prometheus accept: named groups of rules, each an alert or
    a recording rule with an expression; alert names once, `for` a duration, a known severity and
    a summary to show. The PromQL itself is parsed by promtool where it is installed (promtool_errors)."""
    errors = _require(obj, ["spec.groups"])
    names: list[str] = []
    for g, group in enumerate(_get(obj, "spec.groups") or []):
        where = f"{name_of(obj)}: spec.groups[{g}]"
        if not group.get("name") or not group.get("rules"):
            errors.append(f"{where} needs a name and rules")
        for r, rule in enumerate(group.get("rules") or []):
            at, expr = f"{where}.rules[{r}]", rule.get("expr")
            if ("alert" in rule) == ("record" in rule):
                errors.append(f"{at} must be either an alert or a record")
            if not isinstance(expr, str) or not expr.strip() or not _balanced(expr):
                errors.append(f"{at}.expr must be a PromQL expression with balanced brackets")
            if "alert" not in rule:
                continue
            names.append(rule["alert"])
            if not DURATION.match(str(rule.get("for", "0s"))):
                errors.append(f"{at}.for {rule.get('for')!r} is not a duration")
            if _get(rule, "labels.severity") not in SEVERITIES:
                errors.append(f"{at}.labels.severity must be one of {SEVERITIES}")
            if not _get(rule, "annotations.summary"):
                errors.append(f"{at}.annotations.summary is required")
    errors += [f"{name_of(obj)}: alert {n} is defined twice" for n in sorted({n for n in names if names.count(n) > 1})]
    return errors + promtool_errors(obj)


def promtool_errors(obj: dict) -> list[str]:
    """`promtool check rules` on the rule's groups (the format Prometheus loads); nothing without promtool."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return []
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as rules:
        yaml.safe_dump({"groups": obj["spec"]["groups"]}, rules)
        rules.flush()
        proc = subprocess.run([promtool, "check", "rules", rules.name], capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return []
    return [
        f"{name_of(obj)}: promtool check rules: {line}"
        for line in (proc.stderr or proc.stdout).splitlines()
        if line.strip()
    ]


CUSTOM: dict[str, Callable[[dict, list[dict]], list[str]]] = {
    "Kafka": check_kafka,
    "KafkaNodePool": check_node_pool,
    "KafkaTopic": check_topic,
    "KafkaUser": check_user,
    "MongoDBCommunity": check_mongodb,
    "ServiceMonitor": check_service_monitor,
    "PrometheusRule": check_prometheus_rule,
}


def validate_custom(objects: list[dict]) -> list[str]:
    errors = []
    for obj in objects:
        if is_builtin(obj):
            continue
        check = CUSTOM.get(obj["kind"])
        errors += check(obj, objects) if check else [f"{name_of(obj)}: no checker for this custom resource"]
    return errors


def validate(target: str) -> tuple[list[dict], list[str]]:
    objects = render(target)
    names = [name_of(o) for o in objects]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    errors = [f"{n}: defined twice" for n in duplicates]
    return objects, errors + validate_builtin(objects) + validate_custom(objects)


def main() -> int:
    started = time.perf_counter()
    try:
        kubectl()
    except KubectlMissing as exc:
        print(f"k8s-validate: {exc}", file=sys.stderr)
        return 2
    failed = False
    for target in TARGETS:
        objects, errors = validate(target)
        builtin = sum(1 for o in objects if is_builtin(o))
        status = "ok" if not errors else f"{len(errors)} error(s)"
        print(
            f"k8s-validate {target:<5} {len(objects):3d} objects ({builtin} built-in against the "
            f"Kubernetes {KUBERNETES_VERSION} schemas, {len(objects) - builtin} custom resources checked): {status}"
        )
        for error in errors:
            print(f"  {error}")
        failed = failed or bool(errors)
    print(f"k8s-validate: {'FAILED' if failed else 'all valid'} in {time.perf_counter() - started:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
