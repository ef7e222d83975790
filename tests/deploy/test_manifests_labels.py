"""Kubernetes' recommended labels on every workload and its pods (docs/operations.md, "What runs").

`kubectl get pods -l app.kubernetes.io/version=1.0.0`, dashboards grouping by instance, and
tools that read app.kubernetes.io/* all need them on the pods, not only on the Deployments.
The version is the image tag the overlay deploys; selectors never carry version or instance
(a Deployment's selector cannot change, and a release must not orphan its pods).
"""

from __future__ import annotations

import pytest

RECOMMENDED = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
)
MUTABLE = ("app.kubernetes.io/version", "app.kubernetes.io/instance")
OVERLAYS = ["dev", "prod"]


def workloads(objects: list[dict]) -> list[tuple[dict, list[tuple[str, dict]]]]:
    """Each workload with the pod-producing templates under it: (where, metadata)."""
    out = []
    for obj in objects:
        spec = obj.get("spec", {})
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            out.append((obj, [("spec.template", spec["template"].get("metadata", {}))]))
        elif obj["kind"] == "CronJob":
            job = spec["jobTemplate"]
            out.append(
                (
                    obj,
                    [
                        ("spec.jobTemplate", job.get("metadata", {})),
                        ("spec.jobTemplate.spec.template", job["spec"]["template"].get("metadata", {})),
                    ],
                )
            )
    return out


def tags(pod_template: dict) -> set[str]:
    return {c["image"].rsplit(":", 1)[1] for c in pod_template["spec"]["containers"] if ":" in c["image"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_and_pod_template_has_the_recommended_labels(rendered, overlay):
    found = workloads(rendered[overlay])
    assert {o["kind"] for o, _ in found} >= {"Deployment", "CronJob"}
    instances = set()
    for obj, templates in found:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        for where, metadata in [("metadata", obj["metadata"]), *templates]:
            labels = metadata.get("labels", {})
            missing = [key for key in RECOMMENDED if not labels.get(key)]
            assert not missing, f"{overlay}: {name} {where} lacks {missing}"
            assert labels == obj["metadata"]["labels"], f"{overlay}: {name} {where} differs from the workload's"
        instances.add(obj["metadata"]["labels"]["app.kubernetes.io/instance"])
    assert len(instances) == 1, f"{overlay}: one installation, one instance label: {instances}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_version_label_is_the_deployed_image_tag(rendered, overlay):
    for obj in rendered[overlay]:
        if obj["kind"] != "Deployment":
            continue
        template = obj["spec"]["template"]
        assert tags(template) == {template["metadata"]["labels"]["app.kubernetes.io/version"]}, (
            f"{overlay}: Deployment/{obj['metadata']['name']}: set app.kubernetes.io/version to the image tag"
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_leave_out_version_and_instance(rendered, overlay):
    for obj in rendered[overlay]:
        selector = obj.get("spec", {}).get("selector")
        if not isinstance(selector, dict):
            continue
        keys = set(selector.get("matchLabels", selector if obj["kind"] == "Service" else {}))
        assert not keys & set(MUTABLE), f"{overlay}: {obj['kind']}/{obj['metadata']['name']} selects by {keys}"
