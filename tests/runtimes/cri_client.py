#!/usr/bin/env python3
"""Minimal CRI client for the attribution tests (runtime.v1 subset in cri_min.proto).

usage: cri_client.py SOCKET version
       cri_client.py SOCKET run NAME NS UID [--host-network] [--container NAME IMAGE]
                                            [--label KEY=VALUE ...] [--no-labels]   -> prints sandbox id
         (pod labels: app=NAME unless --label/--no-labels say otherwise)
       cri_client.py SOCKET rm ID
       cri_client.py SOCKET rmall              (every sandbox: for cleanup)
       cri_client.py SOCKET serve              (one command per stdin line, one reply line each)
"""
import os, sys
sys.path.insert(0, os.environ.get("NETSLEUTH_CRI_STUBS", os.path.dirname(os.path.abspath(__file__))))
import grpc
import cri_min_pb2 as pb
import cri_min_pb2_grpc as rpc


def stub(sock):
    ch = grpc.insecure_channel("unix://" + sock)
    grpc.channel_ready_future(ch).result(timeout=10)
    return rpc.RuntimeServiceStub(ch)


def sandbox_config(name, ns, uid, host_network, labels):
    mode = pb.NODE if host_network else pb.POD
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=ns, attempt=0),
        # hostNetwork pods share the node's UTS namespace: runc refuses a hostname then.
        hostname="" if host_network else name, log_directory=f"/var/log/pods/{ns}_{name}_{uid}",
        labels=labels,
        linux=pb.LinuxPodSandboxConfig(cgroup_parent="/netsleuth-test",
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=mode, pid=pb.CONTAINER, ipc=pb.POD))))


def run(s, args):
    name, ns, uid = args[0], args[1], args[2]
    host = "--host-network" in args
    labels = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--label")
    if not labels and "--no-labels" not in args:
        labels = {"app": name}
    cfg = sandbox_config(name, ns, uid, host, labels)
    sid = s.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    if "--container" in args:
        i = args.index("--container")
        cname, image = args[i + 1], args[i + 2]
        cc = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=cname), image=pb.ImageSpec(image=image),
                                command=["/bin/sleep", "3600"], log_path=f"{cname}/0.log")
        cid = s.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=sid, config=cc, sandbox_config=cfg)).container_id
        s.StartContainer(pb.StartContainerRequest(container_id=cid))
    return sid


def rm(s, sid):
    for c in s.ListContainers(pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=sid))).containers:
        s.StopContainer(pb.StopContainerRequest(container_id=c.id, timeout=0))
        s.RemoveContainer(pb.RemoveContainerRequest(container_id=c.id))
    s.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid))
    s.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
    return "ok"


def do(s, argv):
    cmd = argv[0]
    if cmd == "version":
        v = s.Version(pb.VersionRequest(version="v1"))
        return f"{v.runtime_name} {v.runtime_version}"
    if cmd == "run":
        return run(s, argv[1:])
    if cmd == "rm":
        return rm(s, argv[1])
    if cmd == "rmall":
        for p in s.ListPodSandbox(pb.ListPodSandboxRequest()).items:
            rm(s, p.id)
        return "ok"
    raise SystemExit(f"unknown command {cmd}")


def main():
    s = stub(sys.argv[1])
    if sys.argv[2] == "serve":
        for line in sys.stdin:
            try:
                print("ok " + do(s, line.split()), flush=True)
            except Exception as e:  # report and go on: the test decides
                print("err " + str(e).replace("\n", " "), flush=True)
        return
    print(do(s, sys.argv[2:]))


main()
