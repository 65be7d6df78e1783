#!/usr/bin/env python3
"""A Pricing API double for the end-to-end tests (moto has no Pricing API): GetProducts over the
awsJson1_1 protocol (POST /, X-Amz-Target: AWSPriceListService.GetProducts), answering with price
list documents shaped as the real API returns them (product attributes, OnDemand terms with an
hourly USD price dimension), filtered by the request's TermMatch filters and paginated by
MaxResults / NextToken. Prices come from a JSON file {"region": {"instance-type": usd-per-hour}}.
Requests are appended to a JSON-lines log.

usage: price_double.py PORT PRICES_JSON REQUESTS_JSONL   (prints "listening" once it accepts connections)
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PRICES = {}
LOG = ""


def document(region, instance_type, usd, market="OnDemand"):
    sku = f"SKU{abs(hash((region, instance_type, market))) % 10**8:08d}"
    return json.dumps({
        "product": {
            "productFamily": "Compute Instance",
            "sku": sku,
            "attributes": {
                "instanceType": instance_type, "regionCode": region, "operatingSystem": "Linux",
                "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used", "marketoption": market,
            },
        },
        "serviceCode": "AmazonEC2",
        "terms": {"OnDemand": {f"{sku}.JRTCKXETXF": {"priceDimensions": {
            f"{sku}.JRTCKXETXF.6YS6EN2CT7": {"unit": "Hrs", "pricePerUnit": {"USD": f"{usd:.10f}"},
                                             "description": f"${usd} per On Demand Linux {instance_type} Instance Hour"},
        }}}},
    })


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        target = self.headers.get("X-Amz-Target", "")
        with open(LOG, "a") as log:
            log.write(json.dumps({"target": target, "body": body}) + "\n")
        if target != "AWSPriceListService.GetProducts":
            return self.reply(400, {"__type": "InvalidParameterException", "message": f"unsupported {target}"})
        if body.get("ServiceCode") != "AmazonEC2":
            return self.reply(400, {"__type": "InvalidParameterException", "message": "unknown service code"})
        terms = {f["Field"]: f["Value"] for f in body.get("Filters") or [] if f.get("Type") == "TERM_MATCH"}
        region = terms.get("regionCode")
        docs = []
        for instance_type, usd in sorted((PRICES.get(region) or {}).items()):
            if terms.get("operatingSystem", "Linux") == "Linux" and terms.get("tenancy", "Shared") == "Shared":
                if terms.get("marketoption", "OnDemand") == "OnDemand":
                    docs.append(document(region, instance_type, usd))
                # The real list also prices Capacity Blocks under the same type (marketoption
                # CapacityBlock); a request that does not filter them out gets them too.
                if terms.get("marketoption") in (None, "CapacityBlock"):
                    docs.append(document(region, instance_type, usd * 0.3, market="CapacityBlock"))
        size = int(body.get("MaxResults") or 100)
        start = int(body.get("NextToken") or 0)
        page = docs[start:start + size]
        reply = {"FormatVersion": "aws_v1", "PriceList": page}
        if start + size < len(docs):
            reply["NextToken"] = str(start + size)
        self.reply(200, reply)


def main():
    global PRICES, LOG
    with open(sys.argv[2]) as f:
        PRICES = json.load(f)
    LOG = sys.argv[3]
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
