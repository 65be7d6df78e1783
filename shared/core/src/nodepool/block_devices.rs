//! An EC2NodeClass's `spec.blockDeviceMappings`: every EBS field Karpenter v1 has, checked as its
//! CRD checks them (each error names the field), for the launch template.

use serde_json::{Map, Value};

use super::BlockDevice;
use super::diagnostics::Ctx;
use crate::resources::Resources;

const EBS_FIELDS: &[&str] = &[
    "volumeSize",
    "volumeType",
    "encrypted",
    "kmsKeyID",
    "iops",
    "throughput",
    "snapshotID",
    "deleteOnTermination",
    "volumeInitializationRate",
];

const VOLUME_TYPES: &[&str] = &["standard", "io1", "io2", "gp2", "sc1", "st1", "gp3"];

/// EBS's largest volume, GiB (64 TiB).
const MAX_VOLUME_GIB: u64 = 64 * 1024;

pub(super) fn parse(ctx: &mut Ctx, bdms: &[Value]) -> Vec<BlockDevice> {
    let mut out = Vec::new();
    for (i, b) in bdms.iter().enumerate() {
        let p = format!("spec.blockDeviceMappings[{i}]");
        let Some(bm) = ctx.object(b, &p) else {
            continue;
        };
        ctx.known(bm, &p, &["deviceName", "ebs", "rootVolume"]);
        let mut bd = BlockDevice {
            device_name: ctx.string(bm, "deviceName", &p).unwrap_or_default(),
            volume_size_gib: None,
            volume_type: None,
            encrypted: None,
            root_volume: bm.get("rootVolume").and_then(Value::as_bool).unwrap_or(false),
            kms_key_id: None,
            iops: None,
            throughput: None,
            snapshot_id: None,
            delete_on_termination: None,
            volume_initialization_rate: None,
        };
        if let Some(e) = ctx.child(bm, "ebs", &p) {
            ebs(ctx, e, &format!("{p}.ebs"), &mut bd);
        }
        out.push(bd);
    }
    if out.iter().filter(|b| b.root_volume).count() > 1 {
        ctx.err("spec.blockDeviceMappings", "at most one mapping may be the rootVolume");
    }
    out
}

fn ebs(ctx: &mut Ctx, e: &Map<String, Value>, p: &str, bd: &mut BlockDevice) {
    ctx.known(e, p, EBS_FIELDS);
    if let Some(size) = ctx.string(e, "volumeSize", p) {
        let mut r = Resources::new();
        match r.set_quantity("storage", &size) {
            Ok(()) => {
                let gib = r.get_named("storage").div_ceil(1 << 30);
                if (1..=MAX_VOLUME_GIB).contains(&gib) {
                    bd.volume_size_gib = Some(gib);
                } else {
                    ctx.err(&format!("{p}.volumeSize"), format!("{size:?} must be from 1Gi to 64Ti"));
                }
            }
            Err(er) => ctx.err(&format!("{p}.volumeSize"), er),
        }
    }
    bd.volume_type = ctx.string(e, "volumeType", p);
    if let Some(t) = &bd.volume_type
        && !VOLUME_TYPES.contains(&t.as_str())
    {
        ctx.err(
            &format!("{p}.volumeType"),
            format!("{t:?} is not an EBS volume type ({})", VOLUME_TYPES.join(", ")),
        );
    }
    for (field, slot) in [
        ("encrypted", &mut bd.encrypted),
        ("deleteOnTermination", &mut bd.delete_on_termination),
    ] {
        if let Some(v) = e.get(field) {
            match v.as_bool() {
                Some(b) => *slot = Some(b),
                None => ctx.err(&format!("{p}.{field}"), format!("{v} must be true or false")),
            }
        }
    }
    bd.kms_key_id = ctx.string(e, "kmsKeyID", p);
    bd.snapshot_id = ctx.string(e, "snapshotID", p);
    if let Some(s) = &bd.snapshot_id
        && !s.starts_with("snap-")
    {
        ctx.err(
            &format!("{p}.snapshotID"),
            format!("{s:?} is not a snapshot id (snap-...)"),
        );
    }
    let volume_type = bd.volume_type.as_deref().unwrap_or("gp3");
    // EBS's ranges: IOPS on io1/io2/gp3 only, throughput on gp3 only.
    for (field, slot, range, types) in [
        ("iops", &mut bd.iops, 100..=256_000, &["io1", "io2", "gp3"][..]),
        ("throughput", &mut bd.throughput, 125..=2_000, &["gp3"][..]),
        (
            "volumeInitializationRate",
            &mut bd.volume_initialization_rate,
            100..=300,
            &[][..],
        ),
    ] {
        let Some(v) = e.get(field) else { continue };
        match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if range.contains(&n) => {
                if !types.is_empty() && !types.contains(&volume_type) {
                    ctx.err(
                        &format!("{p}.{field}"),
                        format!("is only for {} volumes (this one is {volume_type})", types.join(", ")),
                    );
                } else {
                    *slot = Some(n);
                }
            }
            _ => ctx.err(
                &format!("{p}.{field}"),
                format!("{v} must be an integer from {} to {}", range.start(), range.end()),
            ),
        }
    }
    if bd.volume_initialization_rate.is_some() && bd.snapshot_id.is_none() {
        ctx.err(
            &format!("{p}.volumeInitializationRate"),
            "applies only to a volume created from a snapshot (snapshotID)",
        );
    }
}
