#!/usr/bin/env python3
"""Builds and checks an OCI image layout from a Containerfile, without a daemon or root.

    oci-image.py build CONTAINERFILE OUT_DIR --tag TAG [--build-arg K=V ...]
    oci-image.py check CONTAINERFILE OUT_DIR --tag TAG [--build-arg K=V ...]

`build` carries out the instructions scripts/image's Containerfiles use (ARG, FROM scratch, COPY,
USER, ENTRYPOINT, LABEL, ENV) and writes an OCI image layout (oci-layout, index.json, blobs/)
that skopeo, crane or podman can push or load. The layer is reproducible: files in name order,
owner 0:0, time 0, gzip without a timestamp, so the same inputs give the same digest.

`check` reads the layout back and holds it to the Containerfile: the index names the tag, every
blob's digest and size match, the config's user, entrypoint and labels are the Containerfile's,
the layer holds exactly the files COPY put there with their bytes, the entrypoint is a static
executable (no ELF interpreter) and, unpacked into a temporary root, it runs: started with no
configuration it must exit 2 naming the missing setting (the watcher's documented behaviour).
Anything else is an error naming what differs. Standard library only.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shlex
import struct
import subprocess
import sys
import tarfile
import tempfile

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class Spec:
    def __init__(self):
        self.copies = []  # (source path, destination path)
        self.user = None
        self.entrypoint = None
        self.labels = {}
        self.env = []


def fail(message):
    print(f"oci-image: {message}", file=sys.stderr)
    sys.exit(1)


def parse(containerfile, build_args):
    args = {}
    spec = Spec()
    seen_from = False
    with open(containerfile, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        rest = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), rest.strip())
        where = f"{containerfile}:{number}"
        if word == "ARG":
            name, _, default = rest.partition("=")
            args[name] = build_args.get(name, default)
        elif word == "FROM":
            if rest != "scratch":
                fail(f"{where}: only FROM scratch is supported here, not {rest!r}")
            seen_from = True
        elif not seen_from:
            fail(f"{where}: {word} before FROM")
        elif word == "COPY":
            parts = shlex.split(rest)
            if len(parts) != 2 or parts[0].startswith("--"):
                fail(f"{where}: COPY takes one source and one destination here")
            spec.copies.append((parts[0], parts[1]))
        elif word == "USER":
            spec.user = rest
        elif word == "ENTRYPOINT":
            try:
                spec.entrypoint = json.loads(rest)
            except json.JSONDecodeError:
                fail(f"{where}: ENTRYPOINT must be the exec (JSON) form")
        elif word == "LABEL":
            key, _, value = rest.partition("=")
            spec.labels[key] = json.loads(value) if value.startswith('"') else value
        elif word == "ENV":
            key, _, value = rest.partition("=")
            spec.env.append(f"{key}={value}")
        else:
            fail(f"{where}: instruction {word} is not supported by this builder")
    if not spec.entrypoint or not spec.user:
        fail(f"{containerfile}: USER and ENTRYPOINT are required")
    return spec


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(spec, context):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = set()
        for _, dest in spec.copies:
            parent = os.path.dirname(dest.strip("/"))
            while parent:
                dirs.add(parent)
                parent = os.path.dirname(parent)
        for d in sorted(dirs):
            info = tarfile.TarInfo(d + "/")
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = 0
            tar.addfile(info)
        for source, dest in sorted(spec.copies, key=lambda c: c[1]):
            path = os.path.join(context, source)
            if not os.path.isfile(path):
                fail(f"COPY source {source} does not exist (build it first: scripts/image)")
            with open(path, "rb") as f:
                data = f.read()
            info = tarfile.TarInfo(dest.strip("/"))
            info.size = len(data)
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def image(spec, context):
    tar = layer_tar(spec, context)
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=9) as g:
        g.write(tar)
    layer = gz.getvalue()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": spec.user,
            "Entrypoint": spec.entrypoint,
            "Env": spec.env,
            "Labels": spec.labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
        "history": [{"created_by": "scripts/oci-image.py from the Containerfile"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": sha256(config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": LAYER, "digest": sha256(layer), "size": len(layer)}],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return tar, layer, config_bytes, manifest_bytes


def write_blob(out, data):
    digest = sha256(data)
    path = os.path.join(out, "blobs", "sha256", digest.split(":", 1)[1])
    with open(path, "wb") as f:
        f.write(data)
    return digest


def build(spec, context, out, tag):
    os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)
    _, layer, config, manifest = image(spec, context)
    for blob in (layer, config, manifest):
        write_blob(out, blob)
    with open(os.path.join(out, "oci-layout"), "w", encoding="utf-8") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": MANIFEST,
                "digest": sha256(manifest),
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    with open(os.path.join(out, "index.json"), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2)
    print(f"oci-image: wrote {out} ({tag}, manifest {sha256(manifest)}, layer {len(layer)} bytes)")


def read_blob(out, descriptor, what):
    digest = descriptor["digest"]
    path = os.path.join(out, "blobs", *digest.split(":", 1))
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        fail(f"{what} blob {digest} is missing")
    if sha256(data) != digest or len(data) != descriptor["size"]:
        fail(f"{what} blob {digest}: digest or size does not match its descriptor")
    return data


def elf_machine(data):
    """The ELF e_machine of a 64-bit executable (62: x86-64, 183: AArch64), or None."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return None
    endian = "<" if data[5] == 1 else ">"
    return struct.unpack_from(endian + "H", data, 0x12)[0]


def is_static_elf(data):
    """True for an ELF executable with no PT_INTERP program header (no dynamic loader)."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    endian = "<" if data[5] == 1 else ">"
    phoff = struct.unpack_from(endian + "Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x36)
    for i in range(phnum):
        (p_type,) = struct.unpack_from(endian + "I", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def check(spec, context, out, tag):
    with open(os.path.join(out, "index.json"), encoding="utf-8") as f:
        index = json.load(f)
    named = [
        m for m in index.get("manifests", [])
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
    ]
    if len(named) != 1:
        fail(f"index.json names tag {tag!r} {len(named)} times, not once")
    manifest = json.loads(read_blob(out, named[0], "manifest"))
    config = json.loads(read_blob(out, manifest["config"], "config"))
    cfg = config.get("config", {})
    if cfg.get("User") != spec.user:
        fail(f"config user is {cfg.get('User')!r}, the Containerfile says {spec.user!r}")
    if cfg.get("Entrypoint") != spec.entrypoint:
        fail(f"config entrypoint is {cfg.get('Entrypoint')!r}, the Containerfile says {spec.entrypoint!r}")
    for key, value in spec.labels.items():
        if (cfg.get("Labels") or {}).get(key) != value:
            fail(f"config label {key} is {(cfg.get('Labels') or {}).get(key)!r}, not {value!r}")
    uid = spec.user.split(":")[0]
    if not uid.isdigit() or int(uid) == 0:
        fail(f"the image must run as a numeric non-root user, not {spec.user!r}")
    if len(manifest["layers"]) != 1:
        fail(f"expected one layer, found {len(manifest['layers'])}")
    layer = read_blob(out, manifest["layers"][0], "layer")
    tar_bytes = gzip.decompress(layer)
    if config["rootfs"]["diff_ids"] != [sha256(tar_bytes)]:
        fail("the config's diff_id is not the layer's uncompressed digest")
    with tempfile.TemporaryDirectory() as root:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            files = {m.name: m for m in tar.getmembers() if m.isfile()}
            expected = {dest.strip("/") for _, dest in spec.copies}
            if set(files) != expected:
                fail(f"the layer holds {sorted(files)}, the Containerfile copies {sorted(expected)}")
            for source, dest in spec.copies:
                with open(os.path.join(context, source), "rb") as f:
                    if tar.extractfile(files[dest.strip("/")]).read() != f.read():
                        fail(f"{dest} in the layer differs from {source}")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(root, filter="data")
            else:  # Python before 3.11.4: the members were listed and checked above.
                tar.extractall(root)
        binary = os.path.join(root, spec.entrypoint[0].strip("/"))
        with open(binary, "rb") as f:
            elf = f.read()
        if not is_static_elf(elf):
            fail(f"{spec.entrypoint[0]} is not a static executable (it names an ELF interpreter)")
        machine = {"amd64": 62, "arm64": 183}.get(config.get("architecture"))
        if elf_machine(elf) != machine:
            fail(f"{spec.entrypoint[0]} is ELF machine {elf_machine(elf)}, the config says {config.get('architecture')}")
        if not os.access(binary, os.X_OK):
            fail(f"{spec.entrypoint[0]} is not executable in the layer")
        # Unconfigured, the watcher must refuse to start and say which setting is missing (run
        # only where the host can execute it).
        if {"x86_64": 62, "aarch64": 183}.get(os.uname().machine) != machine:
            print(f"oci-image: {out}: entrypoint not run (host {os.uname().machine} cannot execute it)")
            return
        try:
            run = subprocess.run(
                [binary, *spec.entrypoint[1:]], env={}, capture_output=True, text=True, timeout=30
            )
        except OSError as e:
            fail(f"{spec.entrypoint[0]} could not be started here: {e}")
        if run.returncode != 2 or "NODEWRIGHT_CLUSTER_NAME" not in run.stderr:
            fail(
                f"{spec.entrypoint[0]} with no configuration exited {run.returncode} "
                f"(expected 2 naming NODEWRIGHT_CLUSTER_NAME): {run.stderr.strip()!r}"
            )
    print(
        f"oci-image: {out} checked: tag {tag}, user {spec.user}, entrypoint {spec.entrypoint}, "
        f"{len(files)} files, static entrypoint runs and refuses an empty configuration"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("command", choices=["build", "check"])
    p.add_argument("containerfile")
    p.add_argument("out")
    p.add_argument("--tag", required=True)
    p.add_argument("--context", default=".")
    p.add_argument("--build-arg", action="append", default=[])
    a = p.parse_args()
    build_args = dict(kv.split("=", 1) for kv in a.build_arg)
    spec = parse(a.containerfile, build_args)
    if a.command == "build":
        build(spec, a.context, a.out, a.tag)
    else:
        check(spec, a.context, a.out, a.tag)


if __name__ == "__main__":
    main()
