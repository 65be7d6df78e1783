#!/usr/bin/env python3
"""The stack's launch bus in moto, tapped: `create BUS CLUSTER` makes the bus and the rule the
template gives state-change (its `ClaimLaunches` pattern, read from infra/template.yaml), with an
SQS queue as the rule's target so a test can read what EventBridge delivers; prints the queue URL.
`receive URL` prints the delivered events (the message bodies) as one JSON list, and deletes them.

boto3 against the moto server at AWS_ENDPOINT_URL: the same service the functions' PutEvents went
to, so the events read back are the ones EventBridge matched and delivered, not rebuilt here.
"""

import importlib.util
import json
import os
import pathlib
import sys

import boto3
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


def client(service):
    return boto3.client(service, region_name="us-east-1", endpoint_url=os.environ["AWS_ENDPOINT_URL"])


def template_pattern(cluster):
    """The ClaimLaunches rule's pattern, with ClusterName resolved to `cluster`."""
    spec = importlib.util.spec_from_file_location("patterns", ROOT / "scripts/check-event-patterns.py")
    patterns = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(patterns)
    template = yaml.load((ROOT / "infra/template.yaml").read_text(), Loader=patterns.CfnLoader)
    props = template["Resources"]["StateChangeFunction"]["Properties"]["Events"]["ClaimLaunches"]["Properties"]
    assert props["EventBusName"] == {"Ref": "LaunchBus"}, props
    patterns.CLUSTER = cluster
    return patterns.resolve(props["Pattern"])


def create(bus, cluster):
    events, sqs = client("events"), client("sqs")
    events.create_event_bus(Name=bus)
    url = sqs.create_queue(QueueName=f"{bus}-tap")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=f"{bus}-claim-launches", EventBusName=bus, EventPattern=json.dumps(template_pattern(cluster)))
    events.put_targets(Rule=f"{bus}-claim-launches", EventBusName=bus, Targets=[{"Id": "tap", "Arn": arn}])
    print(url)


def receive(url):
    sqs = client("sqs")
    bodies = []
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not msgs:
            break
        for m in msgs:
            bodies.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    print(json.dumps(bodies))


if __name__ == "__main__":
    if sys.argv[1] == "create":
        create(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "receive":
        receive(sys.argv[2])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
