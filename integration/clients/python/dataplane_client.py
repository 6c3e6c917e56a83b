#!/usr/bin/env python3
"""A Python controller talking to the dataplane over its unix socket, with stubs generated from
proto/ at run time: proof that nothing about the API is Rust-specific.

usage: dataplane_client.py SOCKET INTERFACE
Attaches INTERFACE, checks errors come back as proper gRPC codes, prints a JSON summary.
"""
import importlib
import json
import os
import sys
import tempfile

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_tools import protoc

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PROTO_DIR = os.path.join(ROOT, "proto", "proto")
PROTOS = ["dataplane/v1/common.proto", "dataplane/v1/interfaces.proto", "dataplane/v1/system.proto",
          "dataplane/v1/controller.proto", "dataplane/v1/flows.proto", "dataplane/v1/routing.proto"]


def load_stubs(out_dir):
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out_dir}",
                      f"--grpc_python_out={out_dir}", *PROTOS])
    if rc != 0:
        raise SystemExit(f"protoc failed: {rc}")
    sys.path.insert(0, out_dir)
    return {name: importlib.import_module(f"dataplane.v1.{name}") for name in
            ["interfaces_pb2", "interfaces_pb2_grpc", "system_pb2", "system_pb2_grpc", "common_pb2",
             "routing_pb2", "routing_pb2_grpc"]}


def main():
    socket, iface = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        m = load_stubs(tmp)
        # gRPC C-core sends the socket path as :authority on unix sockets, which hyper's HTTP/2
        # (under tonic) rejects as malformed; "localhost" is the convention grpc-go and kubelet use.
        channel = grpc.insecure_channel(f"unix:{socket}", options=[("grpc.default_authority", "localhost")])
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        ifs = m["interfaces_pb2_grpc"].InterfacesStub(channel)
        system = m["system_pb2_grpc"].SystemStub(channel)

        added = ifs.AddInterface(m["interfaces_pb2"].AddInterfaceRequest(
            name=iface, xdp_mode=m["common_pb2"].XDP_MODE_AUTO))
        errors = {}
        for label, req in [("unknown", "ghost0"), ("duplicate", iface), ("empty", "")]:
            try:
                ifs.AddInterface(m["interfaces_pb2"].AddInterfaceRequest(name=req))
                errors[label] = "OK"
            except grpc.RpcError as e:
                errors[label] = f"{e.code().name}: {e.details()}"
        # A megabyte in a field the error echoes: still INVALID_ARGUMENT, with a short message
        # (a megabyte of grpc-message is a header C-core refuses).
        routing = m["routing_pb2_grpc"].RoutingStub(channel)
        huge = m["routing_pb2"].Route(vrf=0, prefix="1" * (1 << 20), next_hop=1)
        try:
            routing.AddRoutes(m["routing_pb2"].AddRoutesRequest(routes=[huge]))
            errors["huge"] = "OK"
        except grpc.RpcError as e:
            errors["huge"] = f"{e.code().name}: {e.details()}"
        status = system.GetStatus(m["system_pb2"].GetStatusRequest())
        listed = ifs.ListInterfaces(m["interfaces_pb2"].ListInterfacesRequest())
        print(json.dumps({
            "health": health_pb2.HealthCheckResponse.ServingStatus.Name(health.status),
            "added": {"name": added.interface.name, "slot": added.interface.slot,
                      "generation": added.generation},
            "errors": errors,
            "generation": status.generation,
            "programs": [p.name for p in status.programs],
            "interfaces": [i.name for i in listed.interfaces],
        }))


if __name__ == "__main__":
    main()
