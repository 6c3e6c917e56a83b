#!/usr/bin/env python3
"""A flow controller in Python: subscribes to flow misses and answers each with a flow, the way a
vRouter agent would. Stubs are generated from proto/ at run time.

usage: flow_controller.py SOCKET NEXT_HOP COUNT
Prints "ready" once subscribed, then installs a FORWARD flow via NEXT_HOP for each of the first
COUNT misses (resolving their HOLDs), then prints a JSON summary of what it saw.
"""
import importlib
import json
import os
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PROTO_DIR = os.path.join(ROOT, "proto", "proto")


def load_stubs(out_dir):
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out_dir}",
                      f"--grpc_python_out={out_dir}", "dataplane/v1/flows.proto"])
    if rc != 0:
        raise SystemExit(f"protoc failed: {rc}")
    sys.path.insert(0, out_dir)
    return (importlib.import_module("dataplane.v1.flows_pb2"), importlib.import_module("dataplane.v1.flows_pb2_grpc"))


def main():
    socket, next_hop, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with tempfile.TemporaryDirectory() as tmp:
        pb, rpc = load_stubs(tmp)
        channel = grpc.insecure_channel(f"unix:{socket}", options=[("grpc.default_authority", "localhost")])
        flows = rpc.FlowsStub(channel)
        stream = flows.SubscribeFlowMisses(pb.SubscribeFlowMissesRequest(), timeout=30)
        print("ready", flush=True)
        seen = []
        for msg in stream:
            if msg.WhichOneof("kind") != "miss":
                continue
            m = msg.miss
            t0 = time.monotonic()
            flows.InstallFlows(pb.InstallFlowsRequest(flows=[
                pb.Flow(key=m.key, action=pb.FLOW_ACTION_FORWARD, next_hop=next_hop)]))
            seen.append({"seq": m.seq, "reason": m.reason, "dst_port": m.key.dst_port,
                         "install_ms": round((time.monotonic() - t0) * 1000, 3)})
            if len(seen) >= count:
                break
        stream.cancel()
        print(json.dumps({"misses": seen}), flush=True)


if __name__ == "__main__":
    main()
