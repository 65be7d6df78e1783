#!/usr/bin/env python3
"""Holds the watcher's manifest, the template's outputs, the watcher's own settings and its image
to one another (run by scripts/check-infra), for a stack deployed as docs/deployment.md says
(`--stack-name nodewright`):

- the service account the manifest runs the watcher as is the one the template's watcher role
  trusts (IRSA subject), and its role annotation is the placeholder the output WatcherRoleArn
  fills; the role may only put events;
- the bus the manifest sends to is the bus the template creates, and the template's rules for the
  watcher's events listen on it;
- the template outputs what the manifest needs (bus, role, cluster name);
- every NODEWRIGHT_* variable the manifest sets is one the watcher reads, and the required one is set;
- the manifest's image tag is the workspace version scripts/image tags, and its user the
  Containerfile's;
- the dashboard's body is JSON once substituted, and every Nodewright metric the dashboard and the
  alarms read is one the functions emit (shared/handlers/src/metrics.rs);
- our CRDs (infra/k8s/crds/) serve exactly the group, version, kind and plural the functions list
  (shared/kube/src/objects.rs), cluster-scoped, with the status subresource the functions patch,
  and the ClusterRole grants list on them, patch on their status and create on events.

Each difference is printed with what and where; exit 1 on any.
"""

import os
import re
import sys

import yaml

STACK = "nodewright"
TEMPLATE = "infra/template.yaml"
MANIFEST = "infra/k8s/watcher.yaml"
WATCHER_MAIN = "watcher/src/main.rs"
METRICS_RS = "shared/handlers/src/metrics.rs"
CONTAINERFILE = "watcher/Containerfile"


class Tagged:
    """A CloudFormation intrinsic (!Ref, !Sub ...) kept as (tag, value)."""

    def __init__(self, tag, value):
        self.tag, self.value = tag, value


def cfn_loader():
    class Loader(yaml.SafeLoader):
        pass

    def construct(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return Tagged(suffix, value)

    Loader.add_multi_constructor("!", construct)
    return Loader


def resolve(value, template):
    """The value for stack STACK with default parameters (what the checks need of it)."""
    if isinstance(value, Tagged):
        if value.tag == "Ref":
            if value.value == "AWS::StackName":
                return STACK
            param = template["Parameters"].get(value.value)
            if param is not None:
                return param.get("Default", "")
            resource = template["Resources"].get(value.value, {})
            if resource.get("Type") == "AWS::Events::EventBus":
                return resolve(resource["Properties"]["Name"], template)
            return f"<{value.value}>"
        if value.tag == "Sub" and isinstance(value.value, str):
            return value.value.replace("${AWS::StackName}", STACK)
        if value.tag == "If":
            name, then, otherwise = value.value
            return resolve(then if condition(name, template) else otherwise, template)
    return value


def condition(name, template):
    expr = template["Conditions"][name]
    if expr.tag == "Equals":
        a, b = (resolve(x, template) for x in expr.value)
        return a == b
    if expr.tag == "Not":
        return not condition_expr(expr.value[0], template)
    raise SystemExit(f"check-manifests: cannot evaluate condition {name}")


def condition_expr(expr, template):
    if expr.tag == "Equals":
        a, b = (resolve(x, template) for x in expr.value)
        return a == b
    raise SystemExit(f"check-manifests: cannot evaluate {expr.tag}")


def main():
    problems = []
    with open(TEMPLATE, encoding="utf-8") as f:
        template = yaml.load(f, Loader=cfn_loader())
    with open(MANIFEST, encoding="utf-8") as f:
        manifest_text = f.read()
    docs = [d for d in yaml.safe_load_all(manifest_text) if d]
    with open(WATCHER_MAIN, encoding="utf-8") as f:
        watcher_src = f.read()
    with open(CONTAINERFILE, encoding="utf-8") as f:
        containerfile = f.read()
    with open("Cargo.toml", encoding="utf-8") as f:
        version = re.search(r'^version = "([^"]+)"', f.read(), re.M).group(1)

    def one(kind):
        found = [d for d in docs if d.get("kind") == kind]
        if len(found) != 1:
            problems.append(f"{MANIFEST}: expected one {kind}, found {len(found)}")
            return {}
        return found[0]

    sa = one("ServiceAccount")
    deployment = one("Deployment")
    resources = template["Resources"]
    outputs = template["Outputs"]

    # The role: generated name (no RoleName: that would need CAPABILITY_NAMED_IAM), given to the
    # manifest through the output WatcherRoleArn; the service account it trusts.
    role = resources["WatcherRole"]["Properties"]
    if "RoleName" in role:
        problems.append(f"{TEMPLATE}: WatcherRole sets RoleName, which `sam deploy` refuses without CAPABILITY_NAMED_IAM")
    role_output = outputs.get("WatcherRoleArn", {}).get("Value")
    if not (isinstance(role_output, Tagged) and role_output.tag == "GetAtt" and role_output.value == "WatcherRole.Arn"):
        problems.append(f"{TEMPLATE}: output WatcherRoleArn is not WatcherRole's ARN")
    # Pod Identity by default (the template's default trusts only it): no IRSA annotation, which
    # the SDK would try first; the IRSA alternative is the commented placeholder.
    annotations = sa.get("metadata", {}).get("annotations") or {}
    if "eks.amazonaws.com/role-arn" in annotations:
        problems.append(
            f"{MANIFEST}: the service account carries an IRSA role-arn annotation; the template's default "
            "(no ClusterOidcProvider) trusts only EKS Pod Identity"
        )
    if not re.search(r"^\s*#\s+eks\.amazonaws\.com/role-arn: WATCHER_ROLE_ARN$", manifest_text, re.M):
        problems.append(f"{MANIFEST}: no commented IRSA annotation with the WATCHER_ROLE_ARN placeholder")
    role_name = "WatcherRole (output WatcherRoleArn)"
    subject = f"system:serviceaccount:{sa['metadata']['namespace']}:{sa['metadata']['name']}"
    trust = role["AssumeRolePolicyDocument"]
    trust_text = trust.value[1].value if isinstance(trust, Tagged) else ""
    if subject not in trust_text:
        problems.append(f"{TEMPLATE}: WatcherRole's IRSA trust does not name {subject}")
    if "pods.eks.amazonaws.com" not in yaml.safe_dump(trust.value[2] if isinstance(trust, Tagged) else trust):
        problems.append(f"{TEMPLATE}: WatcherRole does not trust EKS Pod Identity")
    if deployment and deployment["spec"]["template"]["spec"].get("serviceAccountName") != sa["metadata"]["name"]:
        problems.append(f"{MANIFEST}: the Deployment does not run as service account {sa['metadata']['name']}")

    # The bus.
    container = deployment["spec"]["template"]["spec"]["containers"][0] if deployment else {}
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    bus = resolve(resources["PodPendingRule"]["Properties"]["EventBusName"], template)
    if env.get("NODEWRIGHT_EVENT_BUS") != bus:
        problems.append(
            f"{MANIFEST}: NODEWRIGHT_EVENT_BUS is {env.get('NODEWRIGHT_EVENT_BUS')!r}, "
            f"the template's Pod Pending rule listens on {bus!r}"
        )
    if resolve(outputs["WatcherEventBus"]["Value"], template) != bus:
        problems.append(f"{TEMPLATE}: output WatcherEventBus is not the rule's bus")
    statements = [st for p in role.get("Policies", []) for st in p["PolicyDocument"]["Statement"]]
    if role.get("ManagedPolicyArns") or [st.get("Action") for st in statements] != ["events:PutEvents"]:
        problems.append(
            f"{TEMPLATE}: the watcher role may do {[st.get('Action') for st in statements]} "
            f"(managed policies {role.get('ManagedPolicyArns')}), not only events:PutEvents"
        )

    # Outputs the manifest needs.
    for name in ("WatcherEventBus", "WatcherRoleArn", "WatcherClusterName"):
        if name not in outputs:
            problems.append(f"{TEMPLATE}: no output {name}")

    # The watcher's settings.
    read = set(re.findall(r'"(NODEWRIGHT_[A-Z_]+)"', watcher_src))
    for name in env:
        if name.startswith("NODEWRIGHT_") and name not in read:
            problems.append(f"{MANIFEST}: sets {name}, which the watcher does not read ({sorted(read)})")
    if not env.get("NODEWRIGHT_CLUSTER_NAME"):
        problems.append(f"{MANIFEST}: NODEWRIGHT_CLUSTER_NAME (required) is not set")

    # The image.
    image = container.get("image", "")
    if not image.endswith(f"/nodewright-watcher:{version}"):
        problems.append(f"{MANIFEST}: image {image!r} is not nodewright-watcher:{version}, the tag scripts/image builds")
    user = re.search(r"^USER (\d+)", containerfile, re.M)
    run_as = deployment["spec"]["template"]["spec"].get("securityContext", {}).get("runAsUser") if deployment else None
    if not user or run_as != int(user.group(1)):
        problems.append(f"{MANIFEST}: runAsUser {run_as} is not the Containerfile's USER")

    # docs/deployment.md fills the manifest in with sed: every pattern must still be in it.
    deployment_md = open("docs/deployment.md", encoding="utf-8").read()
    patterns = re.findall(r'-e "s\|([^|]+)\|', deployment_md)
    if len(patterns) < 3:
        problems.append(f"docs/deployment.md: expected the sed that fills in the watcher manifest, found {patterns}")
    for pattern in patterns:
        if pattern not in manifest_text:
            problems.append(f"docs/deployment.md: its sed looks for {pattern!r}, which {MANIFEST} does not hold")

    # The image's architecture (scripts/oci-image.py's config) is the only one the pod may land on.
    arch_match = re.search(r'"architecture": "([a-z0-9]+)"', open("scripts/oci-image.py").read())
    if not arch_match:
        problems.append("scripts/oci-image.py: no image architecture found")
    arch = arch_match.group(1) if arch_match else "?"
    terms = (deployment or {}).get("spec", {}).get("template", {}).get("spec", {}).get("affinity", {}) \
        .get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", [])
    if not terms or not all(
        {"key": "kubernetes.io/arch", "operator": "In", "values": [arch]} in t.get("matchExpressions", []) for t in terms
    ):
        problems.append(f"{MANIFEST}: the watcher is not pinned to kubernetes.io/arch {arch}, its image's architecture")

    # The dashboard and the alarms read only metrics the functions emit.
    with open(METRICS_RS, encoding="utf-8") as f:
        emitted = set(re.findall(r'^\s*\("([A-Za-z]+)", "[A-Za-z]+"\),', f.read(), re.M))
    if not emitted:
        problems.append(f"{METRICS_RS}: no metric declarations found")
    dashboard = resources["Dashboard"]["Properties"]["DashboardBody"]
    body = re.sub(r"\$\{[^}]+\}", "1", dashboard.value if isinstance(dashboard, Tagged) else dashboard)
    try:
        import json

        widgets = json.loads(body)["widgets"]
    except (ValueError, KeyError) as e:
        problems.append(f"{TEMPLATE}: the dashboard body is not JSON with widgets: {e}")
        widgets = []
    read_metrics = set()
    # (metric, Function dimension): every series is emitted per function, under the function's name.
    read_functions = set()
    for w in widgets:
        previous = []
        for row in w.get("properties", {}).get("metrics", []):
            # CloudWatch's shorthand: "." repeats the previous row's field, "..." all before.
            if row and row[0] == "...":
                row = previous[: len(previous) - len(row) + 1] + row[1:]
            row = [previous[i] if v == "." and i < len(previous) else v for i, v in enumerate(row)]
            if len(row) > 1 and row[0] == "Nodewright":
                read_metrics.add(row[1])
                dims = dict(zip(row[2:-1:2], row[3::2]))
                read_functions.add((row[1], dims.get("Function")))
            previous = row
    for r in resources.values():
        props = r.get("Properties", {})
        if r.get("Type") == "AWS::CloudWatch::Alarm":
            for m in props.get("Metrics", []):
                metric = m.get("MetricStat", {}).get("Metric", {})
                if metric.get("Namespace") == "Nodewright":
                    read_metrics.add(metric.get("MetricName"))
                    dims = {d.get("Name"): d.get("Value") for d in metric.get("Dimensions", [])}
                    read_functions.add((metric.get("MetricName"), dims.get("Function")))
            if props.get("Namespace") == "Nodewright":
                read_metrics.add(props.get("MetricName"))
    for m in sorted(read_metrics - emitted):
        problems.append(f"{TEMPLATE}: reads metric Nodewright/{m}, which no function emits ({sorted(emitted)})")
    functions = sorted(d for d in os.listdir("functions") if os.path.exists(f"functions/{d}/src/main.rs"))
    for m, function in sorted(read_functions, key=str):
        if function not in functions:
            problems.append(f"{TEMPLATE}: reads Nodewright/{m} for Function={function!r}, not a function ({functions})")
    # The pending alarm must read the consolidation sweep's ages: the watcher does not re-send a
    # pod whose status is unchanged, so the batches alone miss a stuck pod.
    for function in ("pod-pending", "consolidation"):
        if ("OldestPendingSeconds", function) not in read_functions:
            problems.append(f"{TEMPLATE}: nothing reads OldestPendingSeconds from {function}")

    # The CRDs and the adapter's resources; the ClusterRole.
    objects_rs = open("shared/kube/src/objects.rs").read()
    served = set(re.findall(r'GroupVersionKind::gvk\("([^"]+)", "([^"]+)", "([^"]+)"\),\s*"([^"]+)"', objects_rs))
    if len(served) != 2:
        problems.append(f"shared/kube/src/objects.rs: expected 2 kinds, read {sorted(served)}")
    crds = {}
    for name in ("karpenter.sh_nodepools.yaml", "karpenter.k8s.aws_ec2nodeclasses.yaml"):
        doc = yaml.safe_load(open(f"infra/k8s/crds/{name}"))
        spec = doc["spec"]
        versions = [v for v in spec["versions"] if v.get("served") and v.get("storage")]
        crds[(spec["group"], versions[0]["name"] if versions else "?", spec["names"]["kind"], spec["names"]["plural"])] = (
            name, spec, versions)
    for key in sorted(served):
        if key not in crds:
            problems.append(f"infra/k8s/crds/: no CRD serves {key} as the functions list it")
            continue
        name, spec, versions = crds[key]
        if spec.get("scope") != "Cluster":
            problems.append(f"infra/k8s/crds/{name}: scope {spec.get('scope')!r}, Karpenter's kinds are cluster-scoped")
        if "status" not in (versions[0].get("subresources") or {}):
            problems.append(f"infra/k8s/crds/{name}: no status subresource (the functions patch /status)")
    rbac = [d for d in yaml.safe_load_all(open("infra/k8s/functions-rbac.yaml")) if d and d["kind"] == "ClusterRole"][0]

    def granted(group, resource, verb):
        return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rbac["rules"])

    for group, _, _, plural in sorted(served):
        for resource, verb in ((plural, "list"), (f"{plural}/status", "patch")):
            if not granted(group, resource, verb):
                problems.append(f"infra/k8s/functions-rbac.yaml: {verb} {group}/{resource} is not granted")
    if not granted("events.k8s.io", "events", "create"):
        problems.append("infra/k8s/functions-rbac.yaml: create events.k8s.io/events is not granted")

    for p in problems:
        print(f"check-manifests: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(
        f"check-manifests: watcher manifest, template outputs, watcher settings and image agree "
        f"(bus {bus}, role {role_name}, service account {subject}, image tag {version}; "
        f"dashboard and alarms read {len(read_metrics)} emitted metrics; CRDs and ClusterRole match "
        f"the {len(served)} kinds the functions read)"
    )


if __name__ == "__main__":
    main()
