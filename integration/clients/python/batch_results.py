#!/usr/bin/env python3
"""A continue-on-error AddRoutes batch from Python: the per-entry results read from the status
details (trailer `grpc-status-details-bin`: a google.rpc.Status holding a dataplane.v1.BatchStatus),
with stubs generated from proto/ at run time.

usage: batch_results.py SOCKET NEXT_HOP
Adds 400 routes 2001:db8:ffff:N::/64 -> NEXT_HOP with every third one naming next hop 999999
(unknown): more failures than the details list, so the trailer is at its largest. Prints a JSON
summary.
"""
import importlib
import json
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PROTO_DIR = os.path.join(ROOT, "proto", "proto")
PROTOS = ["dataplane/v1/common.proto", "dataplane/v1/routing.proto", "google/rpc/status.proto"]


def load_stubs(out_dir):
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out_dir}",
                      f"--grpc_python_out={out_dir}", *PROTOS])
    if rc != 0:
        raise SystemExit(f"protoc failed: {rc}")
    sys.path.insert(0, out_dir)
    names = ["dataplane.v1.common_pb2", "dataplane.v1.routing_pb2", "dataplane.v1.routing_pb2_grpc",
             "google.rpc.status_pb2"]
    return {n.rsplit(".", 1)[1]: importlib.import_module(n) for n in names}


def batch_status(m, err):
    """The BatchStatus of a failed batch call, or None."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = m["status_pb2"].Status.FromString(value)
            for any_ in status.details:
                if any_.type_url == "type.googleapis.com/dataplane.v1.BatchStatus":
                    return m["common_pb2"].BatchStatus.FromString(any_.value)
    return None


def main():
    socket, next_hop = sys.argv[1], int(sys.argv[2])
    with tempfile.TemporaryDirectory() as tmp:
        m = load_stubs(tmp)
        channel = grpc.insecure_channel(f"unix:{socket}", options=[("grpc.default_authority", "localhost")])
        routing = m["routing_pb2_grpc"].RoutingStub(channel)
        pb = m["routing_pb2"]
        routes = [pb.Route(vrf=0, prefix=f"2001:db8:ffff:{i:x}::/64", next_hop=999999 if i % 3 == 0 else next_hop)
                  for i in range(400)]
        req = pb.AddRoutesRequest(routes=routes, atomicity=m["common_pb2"].ATOMICITY_CONTINUE_ON_ERROR)
        try:
            routing.AddRoutes(req)
            print(json.dumps({"code": "OK"}))
            return
        except grpc.RpcError as e:
            b = batch_status(m, e)
            print(json.dumps({
                "code": e.code().name,
                "message": e.details(),
                "failed": [[f.index, f.code, f.message] for f in b.failed] if b else None,
                "unlisted": b.unlisted if b else None,
                "entries": b.entries if b else None,
                "applied": b.applied if b else None,
                "generation": b.generation if b else None,
            }))


if __name__ == "__main__":
    main()
