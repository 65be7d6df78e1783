#!/usr/bin/env python3
"""Checks every EventBridge pattern in infra/template.yaml against the sample events in events/.

Each rule must match exactly the samples its function handles and none of the others (e.g. the AWS
Health accountNotification samples, another cluster's Pod Pending batch). Patterns are evaluated by
moto's EventBridge in process (a local pattern matcher, no AWS account): one rule per pattern with
an SQS queue as its target; each sample is put on the bus alone and the queues say which rules
took it.

Run by scripts/test with the project virtualenv (.venv/bin/python scripts/check-event-patterns.py).
"""

import copy
import json
import pathlib
import sys

import boto3
import yaml
from moto import mock_aws

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLUSTER = "demo"  # the cluster the events/ samples name

# rule -> the samples it must match (paths under events/). Every other sample must not match.
EXPECTED = {
    "PodPendingRule": ["pod-pending.json"],
    "SpotInterruptionFunction.Ec2Interruptions": [
        "spot-interruption.json",
        "rebalance-recommendation.json",
        "capacity-reservation-interruption.json",
        "aws-samples/spot-instance-termination-notices__ec2-spot-instance-interruption-warning__1.json",
        "aws-samples/rebalance-recommendations__ec2-instance-rebalance-recommendation__1.json",
    ],
    "SpotInterruptionFunction.HealthScheduledChanges": ["health-scheduled-change.json"],
    "StateChangeFunction.InstanceStates": [
        "instance-state-change-running.json",
        "instance-state-change-terminated.json",
        "aws-samples/monitoring-instance-state-changes__ec2-instance-state-change-notification__1.json",
    ],
    "StateChangeFunction.AutoScaling": [
        "asg-launch-successful.json",
        "asg-launch-unsuccessful.json",
        "asg-terminate-successful.json",
        "aws-samples/ec2-auto-scaling-event-reference__ec2-instance-launch-successful__2.json",
        "aws-samples/ec2-auto-scaling-event-reference__ec2-instance-launch-unsuccessful__3.json",
        "aws-samples/ec2-auto-scaling-event-reference__ec2-instance-terminate-successful__5.json",
    ],
    "StateChangeFunction.NodeReady": ["node-ready.json"],
    "StateChangeFunction.ClaimLaunches": ["claim-launch.json"],
}


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !Sub ...) kept as {tag: value}."""


def _tagged(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {suffix: value}


CfnLoader.add_multi_constructor("!", _tagged)


def resolve(value):
    """Replaces {Ref: ClusterName} with the samples' cluster; anything else unresolved is an error."""
    if isinstance(value, dict):
        if list(value) == ["Ref"]:
            if value["Ref"] == "ClusterName":
                return CLUSTER
            raise ValueError(f"pattern refers to {value['Ref']}")
        return {k: resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v) for v in value]
    return value


def patterns(template):
    out = {}
    for name, res in template["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::Events::Rule" and "EventPattern" in props:
            out[name] = resolve(props["EventPattern"])
        if res["Type"] == "AWS::Serverless::Function":
            for ev_name, ev in props.get("Events", {}).items():
                if ev["Type"] == "EventBridgeRule":
                    out[f"{name}.{ev_name}"] = resolve(ev["Properties"]["Pattern"])
    return out


def samples():
    out = {}
    for path in sorted((ROOT / "events").rglob("*.json")):
        event = json.loads(path.read_text())
        if "Records" in event:  # an SQS batch wraps events; not an EventBridge event itself
            continue
        out[str(path.relative_to(ROOT / "events"))] = event
    # Negatives that must match nothing.
    pod_pending = json.loads((ROOT / "events/pod-pending.json").read_text())
    other = copy.deepcopy(pod_pending)
    other["detail"]["cluster"] = "someone-else"
    out["(pod-pending.json for cluster someone-else)"] = other
    wrong_source = copy.deepcopy(json.loads((ROOT / "events/spot-interruption.json").read_text()))
    wrong_source["source"] = "custom.ec2"
    out["(spot-interruption.json from source custom.ec2)"] = wrong_source
    return out


def main():
    template = yaml.load((ROOT / "infra/template.yaml").read_text(), Loader=CfnLoader)
    rules = patterns(template)
    missing = set(EXPECTED) ^ set(rules)
    failures = []
    if missing:
        failures.append(f"rules and expectations differ: {sorted(missing)}")
    events = samples()
    with mock_aws():
        events_client = boto3.client("events", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        queues = {}
        for i, (rule, pattern) in enumerate(sorted(rules.items())):
            url = sqs.create_queue(QueueName=f"rule-{i}")["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            events_client.put_rule(Name=f"rule-{i}", EventPattern=json.dumps(pattern))
            events_client.put_targets(Rule=f"rule-{i}", Targets=[{"Id": "q", "Arn": arn}])
            queues[rule] = url
        taken = {rule: set() for rule in rules}
        for name, event in events.items():
            entry = {
                "Source": event["source"],
                "DetailType": event["detail-type"],
                "Detail": json.dumps(event["detail"]),
                "Resources": event.get("resources", []),
            }
            result = events_client.put_events(Entries=[entry])
            if result.get("FailedEntryCount"):
                failures.append(f"the bus refused {name}: {result['Entries']}")
            for rule, url in queues.items():
                msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
                for m in msgs:
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                if msgs:
                    taken[rule].add(name)
        for rule in sorted(rules):
            want = set(EXPECTED.get(rule, []))
            for name in sorted(want - taken[rule]):
                failures.append(f"{rule} does not match {name}")
            for name in sorted(taken[rule] - want):
                failures.append(f"{rule} matches {name}")
            print(f"  {rule}: takes {len(taken[rule])} of {len(events)} samples (expected {len(want)})")
    unmatched = [n for n in events if not any(n in v for v in EXPECTED.values())]
    print(f"  samples no rule takes: {', '.join(sorted(unmatched))}")
    if failures:
        for f in failures:
            print(f"FAIL: {f}", file=sys.stderr)
        return 1
    print(f"event patterns: {len(rules)} rules x {len(events)} samples as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
