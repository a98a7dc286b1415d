#!/usr/bin/env python3
"""mkimage.py ROOTFS_DIR NAME:TAG OUT.tar [ENTRYPOINT ...] -> docker-archive tarball."""
import hashlib, io, json, sys, tarfile, time

rootfs, ref, out, *entry = sys.argv[1:]
layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
    t.add(rootfs, arcname=".")
layer_bytes = layer.getvalue()
diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
config = {
    "architecture": "amd64", "os": "linux",
    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(0)),
    "config": {"Entrypoint": entry or None, "Cmd": None, "Env": ["PATH=/bin:/sbin"], "WorkingDir": "/"},
    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    "history": [{"created_by": "mkimage.py"}],
}
config_bytes = json.dumps(config, sort_keys=True).encode()
config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
layer_name = diff_id[7:] + "/layer.tar"
manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": [layer_name]}]

def add(t, name, data):
    ti = tarfile.TarInfo(name); ti.size = len(data); ti.mtime = 0; ti.mode = 0o644
    t.addfile(ti, io.BytesIO(data))

with tarfile.open(out, "w") as t:
    add(t, config_name, config_bytes)
    add(t, layer_name, layer_bytes)
    add(t, "manifest.json", json.dumps(manifest).encode())
