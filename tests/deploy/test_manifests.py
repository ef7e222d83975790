"""Policies every rendered Kubernetes overlay must keep (deploy/k8s; docs/operations.md).

Schema validation of each object is `make k8s-validate` (deploy/k8s/validate.py); these
tests check what schemas cannot: probes, limits and hardening on every container, a PDB
per Deployment, NetworkPolicies that select real pods and open only the contract's calls,
the topics' durability, per-service Mongo users, and that every variable in README's
configuration table reaches the containers. They render with `kubectl kustomize`
(under a second in all) and skip, saying why, only when kubectl is not installed.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


validate = _load("crm_deploy_validate", ROOT / "deploy" / "k8s" / "validate.py")
generate = _load("crm_deploy_generate", ROOT / "deploy" / "generate.py")

# From contract.md (kept here on purpose, not imported from deploy/generate.py)
SERVICES = {  # name: (slug, http, grpc, worker metrics)
    "contacts": ("contacts", 8001, 50051, 9101),
    "sales": ("sales", 8002, 50052, 9111),
    "service-desk": ("servicedesk", 8003, 50053, 9121),
    "messaging": ("messaging", 8004, 50054, 9131),
}
CALLS = {
    "contacts": {"sales", "service-desk", "messaging"},
    "sales": {"contacts"},
    "service-desk": {"contacts"},
    "messaging": {"contacts"},
}
# From the code: whose topics each service's projections read (test_kafka_follows_match_the_projections)
FOLLOWS = {
    "contacts": {"sales", "service-desk"},
    "sales": {"contacts"},
    "service-desk": {"contacts", "sales"},
    "messaging": {"contacts", "sales", "service-desk"},
}
# From contract.md: the support mailbox on SMTP port 2525 (its own process, the service's extra one)
LISTENERS = {("service-desk", "inbound"): (["crm", "serve", "service-desk", "inbound-smtp"], {"smtp": 2525})}
OVERLAYS = ["dev", "prod"]
# ports of the local stand-in servers (crm up); the single-key form of CRM_JWT_KEYS, which the manifests set
LOCAL_ONLY = {"CRM_KAFKA_PORT", "CRM_MONGO_PORT", "CRM_JWT_SECRET"}
# Kafka client certificates (mTLS) and the hostname check: the manifests log in by SCRAM and keep the check on
NOT_IN_MANIFESTS = {"CRM_KAFKA_SSL_CERTFILE", "CRM_KAFKA_SSL_KEYFILE", "CRM_KAFKA_SSL_CHECK_HOSTNAME"}


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def workloads(objects: list[dict]) -> list[tuple[dict, dict]]:
    """(object, pod template) of every Deployment and CronJob."""
    out = []
    for o in objects:
        if o["kind"] == "Deployment":
            out.append((o, o["spec"]["template"]))
        elif o["kind"] == "CronJob":
            out.append((o, o["spec"]["jobTemplate"]["spec"]["template"]))
    return out


def service_of(obj: dict) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/name"].removeprefix("crm-")


def test_generated_files_are_current():
    assert generate.main(["--check"]) == 0, "run: python deploy/generate.py"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_has_its_three_processes(rendered, overlay):
    deployments = {d["metadata"]["name"]: d for d in of_kind(rendered[overlay], "Deployment")}
    for name in SERVICES:
        for process in ("api", "grpc", "worker"):
            d = deployments[f"crm-{name}-{process}"]
            container = d["spec"]["template"]["spec"]["containers"][0]
            assert container["command"] == ["crm", "serve", name, process]
            assert container["image"].rsplit("/", 1)[-1].split(":")[0] == f"crm-{name}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_probed_limited_and_hardened(rendered, overlay):
    for obj, template in workloads(rendered[overlay]):
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]
        empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for c in spec["containers"]:
            where = f"{overlay}: {obj['kind']}/{obj['metadata']['name']}/{c['name']}"
            if obj["kind"] == "Deployment":
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    assert probe in c, f"{where}: no {probe}"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"].get(kind, {})), f"{where}: {kind}"
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            data_dir = next(e["value"] for e in env_of(c, rendered[overlay]) if e["name"] == "CRM_DATA_DIR")
            for path in ("/tmp", data_dir):
                assert mounts.get(path) in empty_dirs, f"{where}: {path} is not a writable emptyDir"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_the_health_endpoints(rendered, overlay):
    for d in of_kind(rendered[overlay], "Deployment"):
        c = d["spec"]["template"]["spec"]["containers"][0]
        name, (_slug, http, grpc, metrics) = service_of(d), SERVICES[service_of(d)]
        process = d["metadata"]["labels"]["app.kubernetes.io/component"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        if process == "api":
            assert ports["http"] == http
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        elif process == "grpc":
            assert ports == {"grpc": grpc, "metrics": metrics + 1}
            assert all(c[p]["grpc"]["port"] == grpc for p in ("startupProbe", "livenessProbe", "readinessProbe"))
        elif process == "worker":
            assert ports == {"metrics": metrics}
            for p in ("livenessProbe", "readinessProbe"):
                assert c[p].get("httpGet", {}).get("port") == "metrics" or "tcpSocket" in c[p], name
        else:  # a listener the outside reaches: probed on its own port (it speaks no HTTP)
            command, listens = LISTENERS[(name, process)]
            assert c["command"] == command and ports == listens
            probes = ("startupProbe", "livenessProbe", "readinessProbe")
            assert all(c[p]["tcpSocket"]["port"] in listens for p in probes)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_listener_has_a_service_and_its_port_open(rendered, overlay):
    objects = rendered[overlay]
    for (name, component), (_command, listens) in LISTENERS.items():
        pod = {
            "app.kubernetes.io/name": f"crm-{name}",
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": "crm",
        }
        (service,) = [s for s in of_kind(objects, "Service") if s["metadata"]["name"] == f"crm-{name}-{component}"]
        assert validate._selects(service["spec"]["selector"], pod)
        assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == listens
        ingress = [p for p in of_kind(objects, "NetworkPolicy") if "Ingress" in p["spec"]["policyTypes"]]
        opened = {
            port["port"]
            for policy in ingress
            if validate._selects(policy["spec"]["podSelector"], pod)
            for rule in policy["spec"].get("ingress", [])
            for port in rule.get("ports", [])
        }
        assert opened == set(listens.values()), (name, component, opened)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_a_pdb_and_the_api_an_hpa(rendered, overlay):
    objects = rendered[overlay]
    pdbs = of_kind(objects, "PodDisruptionBudget")
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objects, "HorizontalPodAutoscaler")}
    for d in of_kind(objects, "Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert any(validate._selects(p["spec"]["selector"], labels) for p in pdbs), d["metadata"]["name"]
        assert d["spec"]["template"]["spec"].get("topologySpreadConstraints"), d["metadata"]["name"]
        if labels["app.kubernetes.io/component"] == "api":
            assert d["metadata"]["name"] in hpas
            assert "replicas" not in d["spec"], "the HPA owns the api's replica count"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_select_real_pods_and_open_only_the_contract(rendered, overlay):
    objects = rendered[overlay]
    pods = [t["metadata"]["labels"] for _o, t in workloads(objects)]
    policies = of_kind(objects, "NetworkPolicy")
    for policy in policies:
        assert any(validate._selects(policy["spec"]["podSelector"], p) for p in pods), policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                sel = peer.get("podSelector", {})
                if "namespaceSelector" not in peer and any(
                    e["key"] == "app.kubernetes.io/name" for e in sel.get("matchExpressions", [])
                ):
                    assert any(validate._selects(sel, p) for p in pods), (policy["metadata"]["name"], sel)
    deny = [
        p
        for p in policies
        if not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ]
    assert deny and all(any(validate._selects(d["spec"]["podSelector"], p) for d in deny) for p in pods)
    grpc_ports = {grpc: name for name, (_s, _h, grpc, _m) in SERVICES.items()}
    for name in SERVICES:
        pod = {
            "app.kubernetes.io/name": f"crm-{name}",
            "app.kubernetes.io/component": "api",
            "app.kubernetes.io/part-of": "crm",
        }
        reached = {
            grpc_ports[port["port"]]
            for p in policies
            if "Egress" in p["spec"]["policyTypes"] and validate._selects(p["spec"]["podSelector"], pod)
            for rule in p["spec"].get("egress", [])
            for port in rule.get("ports", [])
            if port["port"] in grpc_ports
        }
        assert reached == CALLS[name], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_topic_is_durable(rendered, overlay):
    objects = rendered[overlay]
    topics = {t["spec"].get("topicName", t["metadata"]["name"]): t for t in of_kind(objects, "KafkaTopic")}
    clusters = {k["metadata"]["name"] for k in of_kind(objects, "Kafka")}
    for slug, *_ in SERVICES.values():
        topic = topics[f"crm.{slug}.events"]
        assert topic["spec"]["replicas"] == 3
        assert int(topic["spec"]["config"]["min.insync.replicas"]) == 2
        assert int(topic["spec"]["config"]["retention.ms"]) == -1
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] in clusters


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_a_mongo_user_for_its_own_database_only(rendered, overlay):
    objects = rendered[overlay]
    (mongo,) = of_kind(objects, "MongoDBCommunity")
    assert mongo["spec"]["members"] == 3
    users = {u["name"]: u for u in mongo["spec"]["users"]}
    for d in of_kind(objects, "Deployment"):
        name = service_of(d)
        user = users[f"crm-{name}"]
        assert user["roles"] == [{"name": "readWrite", "db": f"crm_{SERVICES[name][0]}"}]
        env = {e["name"]: e for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["CRM_MONGO_URL"]["valueFrom"]["secretKeyRef"]["name"] == user["connectionStringSecretName"]


def env_of(container: dict, objects: list[dict]) -> list[dict]:
    """Every variable a container gets: env, ConfigMaps, and the keys of referenced Secrets."""
    maps = {c["metadata"]["name"]: c.get("data", {}) for c in of_kind(objects, "ConfigMap")}
    example = ROOT / "deploy" / "k8s" / "secrets.example.yaml"
    secrets = {s["metadata"]["name"]: s.get("stringData") or {} for s in yaml.safe_load_all(example.read_text())}
    out = list(container.get("env", []))
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            out += [{"name": k, "value": v} for k, v in maps[source["configMapRef"]["name"]].items()]
        else:
            out += [{"name": k, "valueFrom": "secret"} for k in secrets[source["secretRef"]["name"]]]
    return out


def readme_variables() -> list[str]:
    """The first column of README's configuration table, `CRM_<SERVICE>_X` patterns kept."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        previous = ""
        for token in re.findall(r"`([A-Z0-9_<>]+)`", line.split("|")[1]):
            if token.startswith("_"):  # `CRM_<SERVICE>_HTTP_PORT` / `_GRPC_PORT`
                token = re.match(r"(CRM_<[A-Z]+>|CRM_[A-Z0-9]+)", previous).group(1) + token
            names.append(token)
            previous = token
    return names


def required_for(service: str) -> set[str]:
    slugs = {slug.upper(): name for name, (slug, *_r) in SERVICES.items()}
    key = SERVICES[service][0].upper()
    required = set()
    for var in readme_variables():
        if var in LOCAL_ONLY | NOT_IN_MANIFESTS:
            continue
        if "<SERVICE>" in var:
            targets = CALLS[service] if var.endswith("_GRPC_TARGET") else {service}
            required |= {var.replace("<SERVICE>", SERVICES[t][0].upper()) for t in targets}
            continue
        owner = next((s for s in slugs if var.startswith(f"CRM_{s}_")), None)
        if owner is None or owner == key:
            required.add(var)
    return required


def test_the_readme_table_is_parsed():
    variables = readme_variables()
    assert {
        "CRM_KAFKA_BOOTSTRAP",
        "CRM_MONGO_URL",
        "CRM_JWT_SECRET",
        "CRM_<SERVICE>_METRICS_PORT",
        "CRM_<SERVICE>_GRPC_TARGET",
    } <= set(variables)
    assert "CRM_SALES_GRPC_TARGET" in required_for("contacts")
    assert "CRM_CONTACTS_GRPC_TARGET" in required_for("messaging")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_configured_variable_reaches_the_containers(rendered, overlay):
    objects = rendered[overlay]
    for obj, template in workloads(objects):
        service = service_of(obj)
        container = template["spec"]["containers"][0]
        have = {e["name"] for e in env_of(container, objects)}
        missing = sorted(required_for(service) - have)
        assert not missing, (
            f"{overlay}: {obj['kind']}/{obj['metadata']['name']} lacks {missing} (README: Configuration). "
            f"Add them to deploy/k8s/base/common.env, or to the service's extra_config in deploy/generate.py "
            f"(then run it), or, for a credential, to a Secret in deploy/k8s/secrets.example.yaml"
        )
    for name, (slug, http, grpc, metrics) in SERVICES.items():
        (config,) = [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"].startswith(f"crm-{name}-config")]
        key = slug.upper()
        assert config["data"][f"CRM_{key}_HTTP_PORT"] == str(http)
        assert config["data"][f"CRM_{key}_GRPC_PORT"] == str(grpc)
        assert config["data"][f"CRM_{key}_METRICS_PORT"] == str(metrics)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_scrapes_every_process(rendered, overlay):
    objects = rendered[overlay]
    monitors = of_kind(objects, "ServiceMonitor")
    services = of_kind(objects, "Service")
    for name in SERVICES:
        (monitor,) = [m for m in monitors if m["metadata"]["name"] == f"crm-{name}"]
        selected = [s for s in services if validate._selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
        scraped = {
            (s["metadata"]["labels"]["app.kubernetes.io/component"], e["port"])
            for s in selected
            for e in monitor["spec"]["endpoints"]
            for p in s["spec"]["ports"]
            if p["name"] == e["port"]
        }
        assert scraped == {("api", "http"), ("grpc", "metrics"), ("worker", "metrics")}
        assert all(e.get("honorLabels") for e in monitor["spec"]["endpoints"]), "keep our `service` label"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_calls_with_its_own_credentials_and_grpc_listens_in_the_pod(rendered, overlay):
    """A pod holds its own service key only (so it cannot speak for another service), the key ring
    and the link secret come from Secrets, and gRPC binds 0.0.0.0 there (127.0.0.1 is the local default)."""
    objects = rendered[overlay]
    for obj, template in workloads(objects):
        service = service_of(obj)
        container = template["spec"]["containers"][0]
        env = {e["name"]: e for e in env_of(container, objects)}
        secrets = {
            name: e["valueFrom"]["secretKeyRef"]["name"]
            for name, e in env.items()
            if isinstance(e.get("valueFrom"), dict) and "secretKeyRef" in e["valueFrom"]
        }
        assert secrets["CRM_SERVICE_KEY"] == f"crm-{service}-credentials"
        assert (secrets["CRM_JWT_KEYS"], secrets["CRM_LINK_SECRET"]) == ("crm-jwt", "crm-links")
        assert secrets["CRM_SERVICE_PUBLIC_KEYS"] == "crm-service-public-keys"
        assert env["CRM_GRPC_BIND"]["value"] == "0.0.0.0"


def topic_of(service: str) -> str:
    return f"crm.{SERVICES[service][0]}.events"


def grants(user: dict) -> dict[tuple[str, str], set[str]]:
    """(resource type, name) -> the operations a KafkaUser's ACLs allow there; a prefix pattern ends in `*`."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in user["spec"]["authorization"]["acls"]:
        resource = rule["resource"]
        name = resource.get("name", "") + ("*" if resource.get("patternType") == "prefix" else "")
        out.setdefault((resource["type"], name), set()).update(rule["operations"])
    return out


def allowed(user: dict, kind: str, operation: str) -> set[str]:
    """The names of `kind` where `user` may do `operation` (All allows everything)."""
    return {name for (k, name), ops in grants(user).items() if k == kind and ops & {operation, "All"}}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_takes_only_tls_clients_that_log_in_and_applies_acls(rendered, overlay):
    (kafka,) = of_kind(rendered[overlay], "Kafka")
    listeners = kafka["spec"]["kafka"]["listeners"]
    assert listeners and all(
        listener["tls"] and listener["authentication"]["type"] == "scram-sha-512" for listener in listeners
    ), "no listener may let a client in without TLS and a login"
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_logs_in_to_kafka_as_its_own_user_over_tls(rendered, overlay):
    objects = rendered[overlay]
    (kafka,) = of_kind(objects, "Kafka")
    users = {u["metadata"]["name"] for u in of_kind(objects, "KafkaUser")}
    ports = {listener["port"] for listener in kafka["spec"]["kafka"]["listeners"]}
    for obj, template in workloads(objects):
        service, pod = service_of(obj), template["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e for e in env_of(container, objects)}
        assert (env["CRM_KAFKA_SECURITY_PROTOCOL"]["value"], env["CRM_KAFKA_SASL_MECHANISM"]["value"]) == (
            "SASL_SSL",
            "SCRAM-SHA-512",
        )
        assert env["CRM_KAFKA_SASL_USERNAME"]["value"] == f"crm-{service}" in users
        assert env["CRM_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": f"crm-{service}",
            "key": "password",
        }
        assert int(env["CRM_KAFKA_BOOTSTRAP"]["value"].rsplit(":", 1)[1]) in ports
        ca = Path(env["CRM_KAFKA_SSL_CAFILE"]["value"])
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(ca.parent)]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["secret"]["secretName"] == f"{kafka['metadata']['name']}-cluster-ca-cert"
        assert {"key": "ca.crt", "path": ca.name} in volume["secret"]["items"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_service_writes_only_its_own_topic_and_reads_what_it_follows(rendered, overlay):
    users = {u["metadata"]["name"]: u for u in of_kind(rendered[overlay], "KafkaUser")}
    for service in SERVICES:
        user = users[f"crm-{service}"]
        assert allowed(user, "topic", "Write") == {topic_of(service)}, "a forged event on another topic"
        assert allowed(user, "topic", "Read") == {topic_of(service)} | {topic_of(f) for f in FOLLOWS[service]}
        assert allowed(user, "group", "Read") == {f"crm.{service}.*"}
        assert not any(ops - {"Read", "Write", "Describe", "IdempotentWrite"} for ops in grants(user).values())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_bi_user_reads_every_topic_and_writes_nothing(rendered, overlay):
    users = {u["metadata"]["name"]: u for u in of_kind(rendered[overlay], "KafkaUser")}
    bi = users["crm-bi"]
    assert all(ops <= {"Read", "Describe"} for ops in grants(bi).values())
    assert allowed(bi, "topic", "Read") == {topic_of(service) for service in SERVICES}
    assert allowed(bi, "group", "Read") == {"bi.*"}
    assert set(users) == {f"crm-{service}" for service in SERVICES} | {"crm-bi"}


def test_kafka_follows_match_the_projections(servers, monkeypatch, tmp_path):
    """FOLLOWS (and so the Read ACLs) is what each service's projections really subscribe to."""
    from crmkit.service import discover

    monkeypatch.setenv("CRM_MONGO_URL", servers.mongo_url)
    monkeypatch.setenv("CRM_DATA_DIR", str(tmp_path))
    for name, spec in discover().items():
        monkeypatch.setenv("CRM_SERVICE_NAME", name)
        runtime = spec.runtime()
        try:
            read = {topic for projection in spec.projections(runtime) for topic in projection.topics}
        finally:
            runtime.close()
        assert read == {topic_of(name)} | {topic_of(f) for f in FOLLOWS[name]}, name
