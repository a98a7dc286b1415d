#!/usr/bin/env python3
"""Writes netsleuth's OCI image as an oci-archive (an OCI image layout in a tar), reproducibly.

usage: oci.py TARBALL[,TARBALL...] VERSION REVISION SOURCE_DATE_EPOCH OUT.tar

TARBALL is packaging/build's netsleuth-<version>-<arch>-linux-musl.tar.gz: the image holds
exactly its stripped static binary (/usr/bin/netsleuth), its config.yaml
(/etc/netsleuth/config.yaml) and LICENSE. One gzip layer, FROM scratch: no shell, no libc, no
package manager. Every time stamp is SOURCE_DATE_EPOCH, owners are 0:0, entries are sorted
and gzip's header carries no name or time, so the same inputs give the same bytes and digest.
The platform (linux/amd64, linux/arm64/v8) is read from the binary's ELF header.

One tarball: index.json names that image's manifest; prints the manifest digest. Several (one
per architecture): a multi-architecture image, index.json naming one OCI image index whose
manifests are the per-architecture images (each byte for byte the manifest the single-tarball
run writes); prints the image index's digest (what a registry tag pushed with
`skopeo copy --all` resolves to). Only the Python standard library is used.
"""
import gzip, hashlib, io, json, struct, sys, tarfile

tarballs, version, revision, epoch, out = sys.argv[1:]
tarballs = tarballs.split(",")
epoch = int(epoch)
created = __import__("time").strftime("%Y-%m-%dT%H:%M:%SZ", __import__("time").gmtime(epoch))
# uid/gid of the process by default: nobody/nogroup. The pod spec supplies capabilities (and
# runs it as 0 where the capabilities must be effective: deploy/kubernetes/daemonset.yaml).
USER = "65534:65534"

# What the image holds, from the release tarball.
want = {"netsleuth": ("usr/bin/netsleuth", 0o755),
        "config.yaml": ("etc/netsleuth/config.yaml", 0o644),
        "LICENSE": ("usr/share/doc/netsleuth/LICENSE", 0o644)}
# ELF e_machine -> OCI platform (architecture, variant).
MACHINES = {62: ("amd64", None), 183: ("arm64", "v8")}


def read_tarball(tarball):
    files = {}
    with tarfile.open(tarball, "r:gz") as t:
        for m in t.getmembers():
            base = m.name.split("/", 1)[-1]
            if m.isfile() and base in want:
                files[want[base][0]] = (t.extractfile(m).read(), want[base][1])
    missing = [v[0] for k, v in want.items() if v[0] not in files]
    if missing:
        sys.exit(f"oci.py: {tarball} lacks {missing}")
    elf = files["usr/bin/netsleuth"][0]
    if elf[:4] != b"\x7fELF" or elf[5] != 1:
        sys.exit(f"oci.py: {tarball}: the binary is not a little-endian ELF file")
    machine = struct.unpack_from("<H", elf, 18)[0]
    if machine not in MACHINES:
        sys.exit(f"oci.py: {tarball}: ELF machine {machine} is not amd64 or arm64")
    return files, MACHINES[machine]

def info(name, kind, mode, size=0):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size, ti.mtime = kind, mode, size, epoch
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti

def layer(files):
    """The layer: parent folders first, then files, in sorted order; /tmp is not needed (the
    root file system is mounted read-only and netsleuth writes nothing but the optional event
    file). Returns (uncompressed, gzip'd)."""
    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w", format=tarfile.USTAR_FORMAT) as t:
        dirs = sorted({"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)})
        for d in dirs:
            t.addfile(info(d + "/", tarfile.DIRTYPE, 0o755))
        for p in sorted(files):
            data, mode = files[p]
            t.addfile(info(p, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
    layer_raw = layer_tar.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz, compresslevel=9, mtime=0) as g:
        g.write(layer_raw)
    return layer_raw, gz.getvalue()

def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()

def canon(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()

labels = {
    "org.opencontainers.image.title": "netsleuth",
    "org.opencontainers.image.description":
        "Per-network-namespace network observability exporter for Prometheus",
    "org.opencontainers.image.version": version,
    "org.opencontainers.image.revision": revision,
    "org.opencontainers.image.source": "https://netsleuth.example.org/",
    "org.opencontainers.image.url": "https://netsleuth.example.org/",
    "org.opencontainers.image.licenses": "Apache-2.0",
    "org.opencontainers.image.created": created,
}


def image(tarball):
    """(platform, [config, layer, manifest] blobs, manifest) of one architecture's image."""
    files, (arch, variant) = read_tarball(tarball)
    layer_raw, layer_gz = layer(files)
    platform = {"architecture": arch, "os": "linux"}
    if variant:
        platform["variant"] = variant
    config = canon({**platform, "created": created,
        "config": {
            "User": USER,
            "Entrypoint": ["/usr/bin/netsleuth"],
            "Cmd": ["serve", "--config.file=/etc/netsleuth/config.yaml"],
            "Env": ["PATH=/usr/bin"],
            "WorkingDir": "/",
            "ExposedPorts": {"9102/tcp": {}},
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [digest(layer_raw)]},
        "history": [{"created": created, "created_by": "packaging/oci (netsleuth " + version + ")"}],
    })
    manifest = canon({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest(layer_gz), "size": len(layer_gz)}],
        "annotations": labels,
    })
    return platform, [config, layer_gz, manifest], manifest

ref = {"org.opencontainers.image.ref.name": "localhost/netsleuth:" + version}
images = [image(t) for t in tarballs]
platforms = [p for p, _, _ in images]
if len({(p["architecture"], p.get("variant")) for p in platforms}) != len(platforms):
    sys.exit(f"oci.py: two tarballs of the same architecture: {platforms}")
blobs = [b for _, bs, _ in images for b in bs]
entries = [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(m), "size": len(m), "platform": p} for p, _, m in images]
if len(images) == 1:
    top = images[0][2]
    index = canon({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{**entries[0], "annotations": ref}],
    })
else:
    # The multi-architecture image: an image index blob (the tag's target), named by index.json.
    top = canon({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
        "annotations": labels,
    })
    blobs.append(top)
    index = canon({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
                       "digest": digest(top), "size": len(top), "annotations": ref}],
    })

with open(out, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as t:
    def add(name, data):
        t.addfile(info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    t.addfile(info("blobs/", tarfile.DIRTYPE, 0o755))
    t.addfile(info("blobs/sha256/", tarfile.DIRTYPE, 0o755))
    for blob in sorted({digest(b): b for b in blobs}.values(), key=digest):
        add("blobs/sha256/" + digest(blob)[7:], blob)
    add("index.json", index)
    add("oci-layout", canon({"imageLayoutVersion": "1.0.0"}))
print(digest(top))
