#!/usr/bin/env python3
"""A flow controller in Python, the way a vRouter agent would be one: opens a controller session
(dataplane.v1.Controller/Session), becomes its primary, and answers the misses it streams with
decisions on the same stream. Stubs are generated from proto/ at run time.

usage: flow_controller.py SOCKET NEXT_HOP COUNT [ELECTION_ID]
Prints "ready" once primary, then forwards via NEXT_HOP the flows of the first COUNT misses
(resolving their HOLDs: the held first packets go on), then prints a JSON summary.
"""
import importlib
import json
import os
import queue
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PROTO_DIR = os.path.join(ROOT, "proto", "proto")
PROTOS = ["dataplane/v1/common.proto", "dataplane/v1/flows.proto", "dataplane/v1/controller.proto"]


def load_stubs(out_dir):
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out_dir}",
                      f"--grpc_python_out={out_dir}", *PROTOS])
    if rc != 0:
        raise SystemExit(f"protoc failed: {rc}")
    sys.path.insert(0, out_dir)
    return [importlib.import_module(f"dataplane.v1.{m}") for m in
            ["controller_pb2", "flows_pb2", "common_pb2", "controller_pb2_grpc"]]


def main():
    socket, next_hop, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    election_id = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    with tempfile.TemporaryDirectory() as tmp:
        pb, fpb, cpb, rpc = load_stubs(tmp)
        channel = grpc.insecure_channel(f"unix:{socket}", options=[("grpc.default_authority", "localhost")])
        outbox = queue.Queue()

        def requests():
            # The first message arbitrates; then whatever the controller queues.
            yield pb.SessionRequest(arbitration=pb.Arbitration(
                election_id=pb.Uint128(high=election_id >> 64, low=election_id & (2**64 - 1)),
                config=pb.SessionConfig(max_batch=256)))
            while (req := outbox.get()) is not None:
                yield req

        stream = rpc.ControllerStub(channel).Session(requests(), timeout=30)
        seen, pending, batch_id = [], {}, 0
        for msg in stream:
            kind = msg.WhichOneof("kind")
            if kind == "arbitration":
                if not msg.arbitration.primary:
                    raise SystemExit(f"not the primary: {msg.arbitration}")
                print("ready", flush=True)
            elif kind == "misses":
                batch_id += 1
                misses = [m for m in msg.misses.misses if m.reason == "miss"]
                pending[batch_id] = (time.monotonic(), misses)
                outbox.put(pb.SessionRequest(decisions=pb.Decisions(
                    id=batch_id, atomicity=cpb.ATOMICITY_CONTINUE_ON_ERROR,
                    flows=[fpb.Flow(request_id=m.request_id, action=fpb.FLOW_ACTION_FORWARD, next_hop=next_hop)
                           for m in misses])))
            elif kind == "decision_result":
                r = msg.decision_result
                t0, misses = pending.pop(r.id)
                failed = {e.index for e in r.failed}
                for i, m in enumerate(misses):
                    if i not in failed:
                        seen.append({"seq": m.seq, "reason": m.reason, "dst_port": m.key.dst_port,
                                     "install_ms": round((time.monotonic() - t0) * 1000, 3)})
                if len(seen) >= count:
                    break
            elif kind == "error":
                raise SystemExit(f"session error: {msg.error}")
        outbox.put(None)
        stream.cancel()
        print(json.dumps({"misses": seen}), flush=True)


if __name__ == "__main__":
    main()
