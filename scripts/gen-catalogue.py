#!/usr/bin/env python3
"""Generate Nodewright's embedded EC2 instance catalogue.

Reads the reference data in a `shared/data/ec2` folder (not part of this repository) and writes
`shared/core/data/catalogue.csv`, which is committed and embedded into the binary with
`include_str!`. The build never needs the reference data; run this only to refresh the catalogue:

    python3 scripts/gen-catalogue.py --source ../shared/data/ec2

Sources (see shared/core/data/PROVENANCE.md):
  * raw/moto_instance_types.json.gz            DescribeInstanceTypes records (moto 5.2.5, Apache-2.0)
  * raw/moto_instance_type_offerings/availability-zone/<region>.json.gz   zonal offerings (moto)
  * ec2_catalogue_us-east-1.csv                 us-east-1 on-demand prices (Karpenter's generated
                                                price table, Apache-2.0) joined by build_catalogue.py
  * raw/spotinfo_spot-advisor-data_2025-07.json AWS Spot Instance Advisor (savings %, interruption band)
  * shared/core/data/sources/supplement-instance-types.csv (in this repository): types moto lacks

Output columns (one row per instance type, sorted by name):
  name, vcpu, memory_mib, arch, cpu_manufacturer, gpu_count, gpu_name, gpu_manufacturer,
  gpu_memory_mib (per GPU), accelerator_count, accelerator_name, accelerator_manufacturer,
  current_generation, bare_metal, hypervisor, spot_supported, local_nvme_gb, network_bandwidth_mbps,
  max_enis (of the default network card), ipv4_per_eni, od_price (USD/h, us-east-1), neuron_cores (Neuron devices x cores),
  efa_interfaces (MaximumEfaInterfaces), ebs_bandwidth_mbps (MaximumBandwidthInMbps where EBS
  optimization is the default, else 0), encryption_in_transit (0/1), sustained_clock_mhz (0 unknown),
  branch_enis (trunk branch interfaces for security groups for pods, 0 where the type cannot trunk:
  shared/core/data/sources/karpenter-vpc-limits.csv, from Karpenter's zz_generated.vpclimits.go), spot (region:savings_pct:band for the regions
  the advisor covers of REGIONS), zones (region:letters;...), sorted, all regions in the offerings).
"""
import argparse, collections, csv, gzip, json, os, sys

SPOT_REGIONS = ["us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1"]


def default_card_enis(ni):
    """MaximumNetworkInterfaces of the default network card (all of them when cards are not listed)."""
    index = ni.get("DefaultNetworkCardIndex", 0)
    for card in ni.get("NetworkCards") or []:
        if card.get("NetworkCardIndex", 0) == index:
            return card.get("MaximumNetworkInterfaces") or 0
    return ni.get("MaximumNetworkInterfaces") or 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True, help="path to shared/data/ec2")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "shared", "core", "data", "catalogue.csv"))
    ap.add_argument("--supplement", default=os.path.join(os.path.dirname(__file__), "..", "shared", "core", "data", "sources", "supplement-instance-types.csv"))
    ap.add_argument("--vpc-limits", default=os.path.join(os.path.dirname(__file__), "..", "shared", "core", "data", "sources", "karpenter-vpc-limits.csv"))
    args = ap.parse_args()
    with open(args.vpc_limits) as f:
        branch = {r["instance_type"]: int(r["branch_interfaces"]) for r in csv.DictReader(f)}
    raw = os.path.join(args.source, "raw")
    types = json.load(gzip.open(os.path.join(raw, "moto_instance_types.json.gz")))

    od = {}
    with open(os.path.join(args.source, "ec2_catalogue_us-east-1.csv")) as f:
        for row in csv.DictReader(f):
            if row["od_price_usd_h_us_east_1"]:
                od[row["instance_type"]] = float(row["od_price_usd_h_us_east_1"])

    zones = collections.defaultdict(lambda: collections.defaultdict(set))
    az_dir = os.path.join(raw, "moto_instance_type_offerings", "availability-zone")
    for fn in sorted(os.listdir(az_dir)):
        region = fn.split(".")[0]
        for o in json.load(gzip.open(os.path.join(az_dir, fn))):
            loc = o["Location"]
            if not loc.startswith(region):
                continue
            zones[o["InstanceType"]][region].add(loc[len(region):])

    advisor = json.load(open(os.path.join(raw, "spotinfo_spot-advisor-data_2025-07.json")))
    sa = advisor["spot_advisor"]

    out_rows = []
    for name in sorted(types):
        t = types[name]
        gpus = (t.get("GpuInfo") or {}).get("Gpus", [])
        neuron = (t.get("NeuronInfo") or {}).get("NeuronDevices", [])
        infer = (t.get("InferenceAcceleratorInfo") or {}).get("Accelerators", [])
        gpu_count = sum(g.get("Count", 0) for g in gpus)
        gpu_mem = max((g.get("MemoryInfo", {}).get("SizeInMiB", 0) for g in gpus), default=0)
        if neuron:
            acc_count = sum(n.get("Count", 0) for n in neuron)
            acc_name = neuron[0].get("Name", "")
            acc_mfr = "AWS"
        elif infer:
            acc_count = sum(a.get("Count", 0) for a in infer)
            acc_name = infer[0].get("Name", "")
            acc_mfr = infer[0].get("Manufacturer", "")
        else:
            acc_count, acc_name, acc_mfr = 0, "", ""
        # Karpenter's aws.amazon.com/neuroncore: devices x cores per device.
        neuron_cores = sum(n.get("Count", 0) * (n.get("CoreInfo") or {}).get("Count", 0) for n in neuron)
        ni = t.get("NetworkInfo", {})
        ebs = t.get("EbsInfo") or {}
        # Karpenter labels instance-ebs-bandwidth only where EBS optimization is the default.
        ebs_bw = (ebs.get("EbsOptimizedInfo") or {}).get("MaximumBandwidthInMbps", 0) if ebs.get("EbsOptimizedSupport") == "default" else 0
        clock = t["ProcessorInfo"].get("SustainedClockSpeedInGhz")
        cards = ni.get("NetworkCards") or []
        bw = sum(c.get("BaselineBandwidthInGbps", 0) or 0 for c in cards)
        storage = t.get("InstanceStorageInfo") or {}
        nvme = storage.get("TotalSizeInGB", 0) if storage.get("NvmeSupport") in ("required", "supported") else 0
        spot = []
        for region in SPOT_REGIONS:
            rec = sa.get(region, {}).get("Linux", {}).get(name)
            if rec:
                spot.append(f"{region}:{rec['s']}:{rec['r']}")
        zs = ";".join(f"{r}:{''.join(sorted(z))}" for r, z in sorted(zones[name].items()))
        out_rows.append({
            "name": name,
            "vcpu": t["VCpuInfo"]["DefaultVCpus"],
            "memory_mib": t["MemoryInfo"]["SizeInMiB"],
            "arch": "|".join(a.replace("x86_64", "amd64") for a in t["ProcessorInfo"]["SupportedArchitectures"] if a != "i386"),
            "cpu_manufacturer": t["ProcessorInfo"].get("Manufacturer", ""),
            "gpu_count": gpu_count,
            "gpu_name": gpus[0].get("Name", "") if gpus else "",
            "gpu_manufacturer": gpus[0].get("Manufacturer", "") if gpus else "",
            "gpu_memory_mib": gpu_mem,
            "accelerator_count": acc_count,
            "accelerator_name": acc_name,
            "accelerator_manufacturer": acc_mfr,
            "current_generation": int(bool(t.get("CurrentGeneration"))),
            "bare_metal": int(bool(t.get("BareMetal"))),
            "hypervisor": t.get("Hypervisor", ""),
            "spot_supported": int("spot" in t.get("SupportedUsageClasses", [])),
            "local_nvme_gb": nvme,
            "network_bandwidth_mbps": int(round(bw * 1000)),
            # The default network card's ENIs: the VPC CNI, the AMIs' eni-max-pods table and
            # Karpenter count only those (a p4d.24xlarge has 4 cards of 15: 737 pods, not 2,942).
            "max_enis": default_card_enis(ni),
            "ipv4_per_eni": ni.get("Ipv4AddressesPerInterface") or 0,
            "od_price": od.get(name, ""),
            "neuron_cores": neuron_cores,
            "efa_interfaces": (ni.get("EfaInfo") or {}).get("MaximumEfaInterfaces", 0),
            "ebs_bandwidth_mbps": ebs_bw,
            "encryption_in_transit": int(bool(ni.get("EncryptionInTransitSupported"))),
            "sustained_clock_mhz": int(round(clock * 1000)) if clock else 0,
            "branch_enis": branch.get(name, 0),
            "spot": ";".join(spot),
            "zones": zs,
        })
    # Types the moto snapshot lacks (AMD GPU g4ad), in the output's own columns; the spot advisor
    # and the VPC limits fill the rest, as for every other type.
    known = {r["name"] for r in out_rows}
    with open(args.supplement) as f:
        for r in csv.DictReader(f):
            if r["name"] in known:
                continue
            spot = []
            for region in SPOT_REGIONS:
                rec = sa.get(region, {}).get("Linux", {}).get(r["name"])
                if rec:
                    spot.append(f"{region}:{rec['s']}:{rec['r']}")
            row = {k: "" for k in out_rows[0]}
            row.update({k: v for k, v in r.items() if k in row})
            row.update({
                "od_price": float(r["od_price"]) if r["od_price"] else "",
                "accelerator_count": 0,
                "neuron_cores": 0,
                "branch_enis": branch.get(r["name"], 0),
                "spot": ";".join(spot),
            })
            out_rows.append(row)
    out_rows.sort(key=lambda r: r["name"])
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(out_rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(out_rows)
    priced = sum(1 for r in out_rows if r["od_price"] != "")
    print(f"wrote {len(out_rows)} instance types ({priced} with an on-demand price) to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
