#!/usr/bin/env node
// A flow controller in Node (@grpc/grpc-js, the proto loaded at run time): opens a controller
// session (dataplane.v1.Controller/Session), becomes its primary, and answers the misses it
// streams with decisions on the same stream.
//
// usage: flow_controller.js SOCKET NEXT_HOP COUNT [ELECTION_ID]
// Prints "ready" once primary, forwards via NEXT_HOP the flows of the first COUNT misses, then
// prints a JSON summary.
'use strict';
const path = require('path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const [socket, nextHop, count] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const electionId = BigInt(process.argv[5] || 1);
const protoDir = path.join(__dirname, '..', '..', '..', 'proto', 'proto');
const def = loader.loadSync('dataplane/v1/controller.proto', { includeDirs: [protoDir], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
const pkg = grpc.loadPackageDefinition(def).dataplane.v1;
// grpc-js sends the socket path as :authority on unix sockets, which hyper rejects.
const client = new pkg.Controller(`unix:${socket}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'localhost' });

const seen = [];
const pending = new Map();
let batchId = 0;
const session = client.Session();
const uint128 = (v) => ({ high: String(v >> 64n), low: String(v & ((1n << 64n) - 1n)) });
session.write({ arbitration: { election_id: uint128(electionId), config: { max_batch: 256 } } });
session.on('data', (msg) => {
  switch (msg.kind) {
    case 'arbitration':
      if (!msg.arbitration.primary) { console.error('not the primary'); process.exit(1); }
      console.log('ready');
      break;
    case 'misses': {
      const misses = msg.misses.misses.filter((m) => m.reason === 'miss');
      batchId += 1;
      pending.set(String(batchId), { t0: process.hrtime.bigint(), misses });
      session.write({ decisions: { id: batchId, atomicity: 'ATOMICITY_CONTINUE_ON_ERROR',
        flows: misses.map((m) => ({ request_id: m.request_id, action: 'FLOW_ACTION_FORWARD', next_hop: nextHop })) } });
      break;
    }
    case 'decision_result': {
      const r = msg.decision_result;
      const { t0, misses } = pending.get(r.id);
      pending.delete(r.id);
      const failed = new Set(r.failed.map((e) => e.index));
      misses.forEach((m, i) => {
        if (!failed.has(i)) {
          seen.push({ seq: Number(m.seq), reason: m.reason, dst_port: m.key.dst_port, install_ms: Number(process.hrtime.bigint() - t0) / 1e6 });
        }
      });
      if (seen.length >= count) {
        console.log(JSON.stringify({ misses: seen }));
        session.end();
        client.close();
        process.exit(0);
      }
      break;
    }
    case 'error':
      console.error(`session error: ${JSON.stringify(msg.error)}`);
      process.exit(1);
  }
});
session.on('error', (e) => { console.error(e.message); process.exit(1); });
setTimeout(() => { console.error('timed out'); process.exit(1); }, 30000);
