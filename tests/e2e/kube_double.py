#!/usr/bin/env python3
"""A Kubernetes API server double for the end-to-end tests: the handful of core/v1, apps/v1,
policy/v1, karpenter and events.k8s.io calls Nodewright's functions make (list nodes and pods with
field selectors, get and merge-patch a node, delete a node or a pod, create a pod eviction, list
DaemonSets and PDBs, list NodePools and EC2NodeClasses and merge-patch their status, create Events),
over plain HTTP, backed by a JSON file ({"nodes": [...], "pods": [...], "daemonsets": [...],
"pdbs": [...], "nodepools": [...], "ec2nodeclasses": [...], "events": [...]}; without "nodepools"
the karpenter kinds are not served, as without their CRDs) that the test writes and the double re-reads on every request. Writes are applied
and saved back, as an API server would keep them: a merge patch carrying metadata.resourceVersion
is refused with 409 Conflict when the object has moved on, and every write bumps the object's
resourceVersion. An eviction of a pod a PDB covers with status.disruptionsAllowed 0 is refused
with 429. An Event is validated as the API server does (required fields, note ≤ 1 KiB) and a second
create of its name is refused with 409 AlreadyExists. Every request is appended to a JSON-lines log ({"method", "path", "query", "body"}) so
the test can assert exactly what the functions asked of the cluster.

usage: kube_double.py PORT OBJECTS_JSON REQUESTS_JSONL   (prints "listening" once it accepts connections)
"""
import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LOCK = threading.Lock()
OBJECTS = ""
LOG = ""


def field(obj, path):
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    return cur or ""


def matches(obj, selector):
    """A fieldSelector of `a.b=v`, `a.b==v` and `a.b!=v` terms, comma-separated."""
    for term in filter(None, (selector or "").split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if str(field(obj, key)) == value:
                return False
        else:
            key, value = term.replace("==", "=").split("=", 1)
            if str(field(obj, key)) != value:
                return False
    return True


def merge(target, patch):
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = value


def status(code, reason, message):
    return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                  "message": message, "code": code}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self, method):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        parts = [p for p in url.path.split("/") if p]
        with LOCK:
            with open(LOG, "a") as log:
                log.write(json.dumps({"method": method, "path": url.path, "query": query, "body": body}) + "\n")
            try:
                with open(OBJECTS) as f:
                    store = json.load(f)
            except FileNotFoundError:
                store = {}
            store.setdefault("nodes", [])
            store.setdefault("pods", [])
            before = json.dumps(store, sort_keys=True)
            code, reply = self.route(store, method, parts, query, body)
            if method != "GET" and json.dumps(store, sort_keys=True) != before:
                tmp = OBJECTS + ".double"
                with open(tmp, "w") as f:
                    json.dump(store, f)
                os.replace(tmp, OBJECTS)
        self.reply(code, reply)

    def route(self, STORE, method, parts, query, body):
        selector = query.get("fieldSelector")
        if parts == ["api", "v1", "nodes"] and method == "GET":
            items = [n for n in STORE["nodes"] if matches(n, selector)]
            return 200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}
        if parts[:3] == ["api", "v1", "nodes"] and len(parts) == 4:
            node = next((n for n in STORE["nodes"] if n["metadata"]["name"] == parts[3]), None)
            if node is None:
                return status(404, "NotFound", f'nodes "{parts[3]}" not found')
            if method == "GET":
                return 200, node
            if method == "PATCH":
                body = body or {}
                want = (body.get("metadata") or {}).pop("resourceVersion", None)
                have = node["metadata"].get("resourceVersion", "1")
                if want is not None and want != have:
                    return status(409, "Conflict", f'Operation cannot be fulfilled on nodes "{parts[3]}": '
                                  "the object has been modified; please apply your changes to the latest version")
                merge(node, body)
                node["metadata"]["resourceVersion"] = str(int(have) + 1)
                return 200, node
            if method == "DELETE":
                STORE["nodes"].remove(node)
                return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        if parts == ["api", "v1", "pods"] and method == "GET":
            items = [p for p in STORE["pods"] if matches(p, selector)]
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}
        if len(parts) == 7 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods" \
                and parts[6] == "eviction" and method == "POST":
            ns, name = parts[3], parts[5]
            pod = next((p for p in STORE["pods"]
                        if p["metadata"]["namespace"] == ns and p["metadata"]["name"] == name), None)
            if pod is None:
                return status(404, "NotFound", f'pods "{name}" not found')
            for pdb in STORE.get("pdbs", []):
                sel = ((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
                labels = pod["metadata"].get("labels") or {}
                if pdb["metadata"].get("namespace") == ns and sel and all(labels.get(k) == v for k, v in sel.items()) \
                        and (pdb.get("status") or {}).get("disruptionsAllowed", 0) == 0:
                    return status(429, "TooManyRequests",
                                  "Cannot evict pod as it would violate the pod's disruption budget.")
            STORE["pods"].remove(pod)
            return 201, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        if len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods" and method == "DELETE":
            ns, name = parts[3], parts[5]
            pod = next((p for p in STORE["pods"]
                        if p["metadata"]["namespace"] == ns and p["metadata"]["name"] == name), None)
            if pod is None:
                return status(404, "NotFound", f'pods "{name}" not found')
            STORE["pods"].remove(pod)
            return 200, pod
        if parts == ["apis", "apps", "v1", "daemonsets"] and method == "GET":
            return 200, {"kind": "DaemonSetList", "apiVersion": "apps/v1", "metadata": {},
                         "items": STORE.get("daemonsets", [])}
        if parts == ["apis", "policy", "v1", "poddisruptionbudgets"] and method == "GET":
            return 200, {"kind": "PodDisruptionBudgetList", "apiVersion": "policy/v1", "metadata": {},
                         "items": STORE.get("pdbs", [])}
        config = {("karpenter.sh", "nodepools"): "nodepools", ("karpenter.k8s.aws", "ec2nodeclasses"): "ec2nodeclasses"}
        if len(parts) >= 4 and parts[0] == "apis" and parts[2] == "v1" and (parts[1], parts[3]) in config:
            key = config[(parts[1], parts[3])]
            if key not in STORE:
                # Not in the objects file: the kind is not served (no CRD), as the API server says.
                return status(404, "NotFound", "the server could not find the requested resource")
            if len(parts) == 4 and method == "GET":
                kind = "NodePoolList" if key == "nodepools" else "EC2NodeClassList"
                items = [{k: v for k, v in o.items() if k not in ("apiVersion", "kind")} for o in STORE[key]]
                return 200, {"kind": kind, "apiVersion": f"{parts[1]}/v1", "metadata": {"resourceVersion": "1"},
                             "items": items}
            if len(parts) == 6 and parts[5] == "status" and method == "PATCH":
                obj = next((o for o in STORE[key] if o["metadata"]["name"] == parts[4]), None)
                if obj is None:
                    return status(404, "NotFound", f'{key} "{parts[4]}" not found')
                # The status subresource takes status only; a merge patch replaces lists whole.
                patch = (body or {}).get("status") or {}
                obj.setdefault("status", {})
                merge(obj["status"], patch)
                obj["metadata"]["resourceVersion"] = str(int(obj["metadata"].get("resourceVersion", "1")) + 1)
                return 200, obj
        if len(parts) == 6 and parts[:3] == ["apis", "events.k8s.io", "v1"] and parts[3] == "namespaces" \
                and parts[5] == "events" and method == "POST":
            event = body or {}
            name = (event.get("metadata") or {}).get("name")
            for required in ("eventTime", "reportingController", "reportingInstance", "reason", "action", "type"):
                if not event.get(required):
                    return status(422, "Invalid", f"Event.events.k8s.io is invalid: {required}: Required value")
            if not name or len(name) > 253 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name):
                return status(422, "Invalid", "Event.events.k8s.io is invalid: metadata.name: Invalid value")
            if len(event.get("note") or "") > 1024:
                return status(422, "Invalid", "Event.events.k8s.io is invalid: note: Too long: may not be more than 1024 bytes")
            events = STORE.setdefault("events", [])
            if any(e["metadata"]["name"] == name and e["metadata"].get("namespace") == parts[4] for e in events):
                return status(409, "AlreadyExists", f'events.events.k8s.io "{name}" already exists')
            event["metadata"]["namespace"] = parts[4]
            events.append(event)
            return 201, event
        return status(404, "NotFound", f"the double does not serve {method} /{'/'.join(parts)}")

    def do_GET(self):
        self.handle_any("GET")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_POST(self):
        self.handle_any("POST")

    def do_DELETE(self):
        self.handle_any("DELETE")


def main():
    global OBJECTS, LOG
    OBJECTS, LOG = sys.argv[2], sys.argv[3]
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
