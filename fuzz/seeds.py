#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into fuzz/corpus/<target>/seed-*.

Run once by hand (hack/fuzz.sh does not need it: the seeds are committed);
kept so that the seeds can be rebuilt or extended. Needs GNU tar (sparse
entries), gzip and zstd.

unpack:   small layers: every entry type, hardlinks, symlinks, whiteouts, PAX
          records (xattrs, times, long names), GNU long names, GNU and PAX
          sparse files, each compression, and hostile ones (.., absolute,
          write-through-symlink, hardlink out of the layer).
manifest: OCI/Docker manifests and indexes, configs, digests, references.
cri:      [u16 LE length][PodSandboxConfig][ContainerConfig] protobuf, built
          by hand with a tiny encoder (field numbers from proto/api.proto).
"""

import gzip
import hashlib
import io
import json
import os
import struct
import subprocess
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def out(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- unpack

def tar_of(entries, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for e in entries:
            info, data = e
            t.addfile(info, io.BytesIO(data) if data is not None else None)
        end = t.offset
    # Up to the end-of-archive blocks: the record padding after them only
    # makes inputs longer for the fuzzer.
    return buf.getvalue()[:end + 1024]


def ti(name, kind=tarfile.REGTYPE, data=b"", mode=0o644, link="", uid=0, gid=0,
       mtime=1700000000, pax=None, dev=(0, 0)):
    i = tarfile.TarInfo(name)
    i.type = kind
    i.mode = mode
    i.uid, i.gid = uid, gid
    i.mtime = mtime
    i.linkname = link
    i.devmajor, i.devminor = dev
    if pax:
        i.pax_headers = pax
    if kind == tarfile.REGTYPE:
        i.size = len(data)
        return (i, data)
    return (i, None)


def unpack_seeds():
    tree = [
        ti("./", tarfile.DIRTYPE, mode=0o755),
        ti("etc/", tarfile.DIRTYPE, mode=0o755),
        ti("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"),
        ti("bin/", tarfile.DIRTYPE, mode=0o755),
        ti("bin/busybox", data=b"\x7fELF" + b"\0" * 60, mode=0o4755),
        ti("bin/sh", tarfile.SYMTYPE, link="busybox"),
        ti("bin/ls", tarfile.LNKTYPE, link="bin/busybox"),
        ti("tmp/", tarfile.DIRTYPE, mode=0o1777),
        ti("home/user/", tarfile.DIRTYPE, mode=0o700, uid=1000, gid=1000),
        ti("home/user/.profile", data=b"export PS1='$ '\n", uid=1000, gid=1000),
        ti("zeros", data=b"\0" * 20000 + b"end"),
    ]
    for fmt, fname in [(tarfile.PAX_FORMAT, "pax"), (tarfile.GNU_FORMAT, "gnu"),
                       (tarfile.USTAR_FORMAT, "ustar")]:
        t = tar_of(tree, fmt)
        out("unpack", f"tree-{fname}.tar", t)
    t = tar_of(tree)
    out("unpack", "tree.tar.gz", gzip.compress(t, mtime=0))
    out("unpack", "tree.tar.zst",
        subprocess.run(["zstd", "-q", "-c", "-3"], input=t, capture_output=True, check=True).stdout)
    # Two gzip members (pigz / concatenated streams).
    half = tar_of(tree[:4], tarfile.GNU_FORMAT)
    out("unpack", "multimember.tar.gz", gzip.compress(half[:1024], mtime=0) + gzip.compress(half[1024:], mtime=0))

    out("unpack", "whiteouts.tar", tar_of([
        ti("a/", tarfile.DIRTYPE),
        ti("a/.wh..wh..opq"),
        ti("a/.wh.gone"),
        ti(".wh.b"),
        ti("c/.wh..wh.plnk/123"),
        ti("a/kept", data=b"x"),
    ]))
    out("unpack", "pax-xattrs-times.tar", tar_of([
        ti("f", data=b"data", pax={
            "SCHILY.xattr.user.note": "hi",
            "SCHILY.xattr.security.capability": "\x01\x00\x00\x02",
            "SCHILY.xattr.trusted.overlay.opaque": "y",
            "mtime": "1700000000.123456789",
            "atime": "-5.5",
        }),
        ti("d/", tarfile.DIRTYPE, pax={"mtime": "12.5"}),
        ti("g", tarfile.XGLTYPE),
    ]))
    long = "/".join(["dir%03d" % i for i in range(30)]) + "/" + "n" * 120
    out("unpack", "longnames-pax.tar", tar_of([ti(long, data=b"deep"),
                                               ti("ln", tarfile.SYMTYPE, link="x" * 300)]))
    out("unpack", "longnames-gnu.tar", tar_of([ti(long, data=b"deep"),
                                               ti("hl", tarfile.LNKTYPE, link=long)], tarfile.GNU_FORMAT))
    out("unpack", "nodes.tar", tar_of([
        ti("dev/", tarfile.DIRTYPE),
        ti("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
        ti("dev/loop0", tarfile.BLKTYPE, mode=0o660, dev=(7, 0)),
        ti("dev/fifo", tarfile.FIFOTYPE, mode=0o600),
    ], tarfile.USTAR_FORMAT))
    out("unpack", "replace.tar", tar_of([
        ti("x", data=b"file"),
        ti("x/", tarfile.DIRTYPE),
        ti("x/y", data=b"in dir"),
        ti("x", data=b"file again"),
        ti("s", tarfile.SYMTYPE, link="x"),
        ti("s", tarfile.DIRTYPE),
    ]))
    out("unpack", "hostile.tar", tar_of([
        ti("../canary", data=b"escape"),
        ti("/abs/file", data=b"abs"),
        ti("a/../../b", data=b"dots"),
        ti("link", tarfile.SYMTYPE, link="../"),
        ti("link/canary", data=b"through symlink"),
        ti("hl", tarfile.LNKTYPE, link="../canary"),
        ti("hl2", tarfile.LNKTYPE, link="/etc/passwd"),
        ti("abs", tarfile.SYMTYPE, link="/"),
        ti("abs/tmp/x", data=b"x"),
    ]))
    out("unpack", "big-declared.tar", tar_of([ti("f", data=b"\0" * 4096)])[:1024])
    # Sparse files from GNU tar: old GNU format ('S' entries) and PAX 1.0.
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "src")
        os.mkdir(src)
        with open(os.path.join(src, "sparse"), "wb") as f:
            f.write(b"head")
            f.seek(300000)
            f.write(b"middle")
            f.seek(600000)
            f.write(b"tail")
        for fmt in ["gnu", "posix"]:
            t = os.path.join(d, fmt + ".tar")
            subprocess.run(["tar", "--sparse", f"--format={fmt}", "-C", src, "-cf", t, "sparse"],
                           check=True)
            with open(t, "rb") as f:
                out("unpack", f"sparse-{fmt}.tar", f.read())


# ---------------------------------------------------------------- manifest

def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def manifest_seeds():
    d = sha(b"x")
    cfg = {
        "architecture": "amd64", "os": "linux",
        "config": {"User": "1000:1000", "Env": ["PATH=/bin"], "Entrypoint": ["/bin/sh"],
                   "Cmd": ["-c", "true"], "WorkingDir": "/", "StopSignal": "SIGTERM"},
        "rootfs": {"type": "layers", "diff_ids": [d, sha(b"y")]},
        "history": [{"created_by": "seed"}],
    }
    out("manifest", "config.json", json.dumps(cfg).encode())
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": 32}
    m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d, "size": 7},
         "layers": [layer, dict(layer, mediaType="application/vnd.oci.image.layer.v1.tar+zstd")],
         "annotations": {"a": "b"}}
    out("manifest", "oci-manifest.json", json.dumps(m).encode())
    dm = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
          "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": d, "size": 7},
          "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": d,
                      "size": 5, "urls": ["https://example.invalid/x"]}]}
    out("manifest", "docker-manifest.json", json.dumps(dm, indent=3).encode())
    plats = [("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "arm", "v7"),
             ("linux", "arm", "v6"), ("windows", "amd64", None), ("unknown", "unknown", None)]
    idx = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
           "manifests": [dict({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "digest": sha(str(p).encode()), "size": 500},
                              platform=dict({"os": p[0], "architecture": p[1]},
                                            **({"variant": p[2]} if p[2] else {})))
                         for p in plats]}
    out("manifest", "oci-index.json", json.dumps(idx).encode())
    dl = dict(idx, mediaType="application/vnd.docker.distribution.manifest.list.v2+json")
    dl["manifests"] = dl["manifests"][:3] + [{"mediaType": "x", "digest": d, "size": 1}]
    out("manifest", "docker-list.json", json.dumps(dl).encode())
    out("manifest", "schema1.json", b'{"schemaVersion":1,"name":"x","fsLayers":[]}')
    out("manifest", "artifact.json", json.dumps(dict(m, config=dict(m["config"], mediaType="application/vnd.cncf.helm.config.v1+json"))).encode())
    out("manifest", "digest.txt", d.encode())
    out("manifest", "ref.txt", b"registry.example:5000/ns/app:1.0@" + d.encode())
    out("manifest", "ref-short.txt", b"busybox")


# ---------------------------------------------------------------- cri

def varint(n):
    b = bytearray()
    while True:
        x = n & 0x7F
        n >>= 7
        if n:
            b.append(x | 0x80)
        else:
            b.append(x)
            return bytes(b)


def f_int(num, v):
    return varint(num << 3) + varint(v & 0xFFFFFFFFFFFFFFFF)


def f_bytes(num, b):
    if isinstance(b, str):
        b = b.encode()
    return varint(num << 3 | 2) + varint(len(b)) + b


def f_map(num, d):
    return b"".join(f_bytes(num, f_bytes(1, k) + f_bytes(2, v)) for k, v in d.items())


def pod(hostname="web-0", host_net=False, sysctls=None, cgroup_parent="kubepods-burstable-pod1.slice",
        privileged=False, dns=True):
    md = f_bytes(1, "web-0") + f_bytes(2, "uid-1") + f_bytes(3, "default") + f_int(4, 0)
    b = f_bytes(1, md) + f_bytes(2, hostname) + f_bytes(3, "/var/log/pods/default_web-0_uid-1")
    if dns:
        b += f_bytes(4, f_bytes(1, "10.96.0.10") + f_bytes(2, "default.svc.cluster.local") + f_bytes(3, "ndots:5"))
    b += f_bytes(5, f_int(1, 0) + f_int(2, 8080) + f_int(3, 80) + f_bytes(4, "0.0.0.0"))
    b += f_map(6, {"app": "web"}) + f_map(7, {"kubernetes.io/config.seen": "now"})
    ns = f_int(1, 2 if host_net else 0) + f_int(2, 0) + f_int(3, 0)
    sc = f_bytes(1, ns) + f_int(6, 1 if privileged else 0)
    linux = f_bytes(1, cgroup_parent) + f_bytes(2, sc) + f_map(3, sysctls or {})
    b += f_bytes(8, linux)
    return b


def container(extra=b"", sc=b"", resources=b""):
    md = f_bytes(1, "app") + f_int(2, 1)
    b = f_bytes(1, md) + f_bytes(2, f_bytes(1, "docker.io/library/busybox:1.36"))
    b += f_bytes(3, "/bin/sh") + f_bytes(4, "-c") + f_bytes(4, "sleep 1") + f_bytes(5, "/work")
    b += f_bytes(6, f_bytes(1, "A") + f_bytes(2, "1"))
    b += f_bytes(7, f_bytes(1, "/data") + f_bytes(2, "/tmp") + f_int(3, 1) + f_int(5, 0))
    b += f_bytes(8, f_bytes(1, "/dev/fuse") + f_bytes(2, "/dev/null") + f_bytes(3, "rw"))
    b += f_map(9, {"l": "v"}) + f_map(10, {"a": "b"}) + f_bytes(11, "app/0.log")
    linux = f_bytes(1, resources) + f_bytes(2, sc)
    b += f_bytes(15, linux) + extra
    return b


def cri(p, c):
    return struct.pack("<H", len(p)) + p + c


def cri_seeds():
    res = (f_int(1, 100000) + f_int(2, 50000) + f_int(3, 512) + f_int(4, 64 << 20) + f_int(5, -998)
           + f_bytes(6, "0-1") + f_bytes(7, "0") + f_bytes(8, f_bytes(1, "2MB") + f_int(2, 4 << 20))
           + f_map(9, {"memory.high": "1000000", "pids.max": "100"}) + f_int(10, 128 << 20))
    caps = f_bytes(1, f_bytes(1, "NET_ADMIN") + f_bytes(2, "CHOWN"))
    seccomp = f_bytes(1, f_int(1, 0))  # RuntimeDefault
    sc = (f_bytes(1, caps) + f_int(2, 0) + f_bytes(5, f_int(1, 1000)) + f_bytes(6, "")
          + f_int(7, 0) + f_int(8, 1) + f_int(8, 2000) + f_int(11, 1)
          + f_bytes(13, "/proc/kcore") + f_bytes(14, "/proc/sys") + f_bytes(15, seccomp))
    out("cri", "basic.bin", cri(pod(), container(sc=sc, resources=res)))
    out("cri", "empty.bin", cri(b"", b""))
    out("cri", "minimal.bin", cri(pod(dns=False), container()))
    out("cri", "host-net-sysctls.bin", cri(pod(host_net=True, sysctls={"net.core.somaxconn": "1024", "kernel.shm_rmid_forced": "1"}), container()))
    out("cri", "sysctls.bin", cri(pod(sysctls={"net/ipv4/ip_forward": "1", "kernel.msgmax": "8192", "fs.mqueue.queues_max": "4"}), container()))
    out("cri", "privileged.bin", cri(pod(privileged=True), container(sc=f_int(2, 1))))
    out("cri", "cgroupfs.bin", cri(pod(cgroup_parent="/kubepods/burstable/pod1"), container(resources=res)))
    bad_unified = f_map(9, {"../../proc/sys/kernel/core_pattern": "x", "cgroup.procs": "1"})
    out("cri", "unified-hostile.bin", cri(pod(), container(resources=bad_unified)))
    lh = f_bytes(15, f_int(1, 2) + f_bytes(2, "localhost/profile.json"))
    out("cri", "seccomp-localhost.bin", cri(pod(), container(sc=lh)))
    out("cri", "hostname-newline.bin", cri(pod(hostname="a\nb"), container()))


if __name__ == "__main__":
    unpack_seeds()
    manifest_seeds()
    cri_seeds()
