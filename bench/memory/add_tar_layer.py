#!/usr/bin/env python3
"""add_tar_layer.py LAYOUT TAG TAR: appends TAR to image LAYOUT:TAG as an uncompressed layer
(application/vnd.oci.image.layer.v1.tar; its digest is its diff_id), moving the file into the
layout's blobs. Faster than `umoci raw add-layer`, which gzips: the bench's 1 GiB layers are
encrypted (and compressed per chunk) by `lazycrypt encrypt` right after."""
import hashlib
import json
import os
import sys


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(8 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def put_json(layout, obj):
    data = json.dumps(obj, separators=(",", ":")).encode()
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def blob_path(layout, digest):
    return os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1])


def main():
    layout, tag, tar = sys.argv[1:4]
    digest = "sha256:" + sha256_file(tar)
    size = os.path.getsize(tar)
    os.replace(tar, blob_path(layout, digest))
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    entry = next(m for m in index["manifests"]
                 if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    with open(blob_path(layout, entry["digest"])) as f:
        manifest = json.load(f)
    with open(blob_path(layout, manifest["config"]["digest"])) as f:
        config = json.load(f)
    config["rootfs"]["diff_ids"].append(digest)
    config.setdefault("history", []).append({"created_by": "bench/memory", "comment": "data"})
    manifest["config"]["digest"], manifest["config"]["size"] = put_json(layout, config)
    manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                               "digest": digest, "size": size})
    entry["digest"], entry["size"] = put_json(layout, manifest)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)


if __name__ == "__main__":
    main()
