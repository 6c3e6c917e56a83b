#!/usr/bin/env node
// A flow controller in Node (@grpc/grpc-js, the proto loaded at run time): subscribes to flow
// misses and answers each with a flow.
//
// usage: flow_controller.js SOCKET NEXT_HOP COUNT
// Prints "ready" once subscribed, installs a FORWARD flow via NEXT_HOP for each of the first
// COUNT misses, then prints a JSON summary.
'use strict';
const path = require('path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const [socket, nextHop, count] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const protoDir = path.join(__dirname, '..', '..', '..', 'proto', 'proto');
const def = loader.loadSync('dataplane/v1/flows.proto', { includeDirs: [protoDir], keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
const pkg = grpc.loadPackageDefinition(def).dataplane.v1;
// grpc-js sends the socket path as :authority on unix sockets, which hyper rejects.
const client = new pkg.Flows(`unix:${socket}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'localhost' });

const seen = [];
const stream = client.SubscribeFlowMisses({});
let done = false;
stream.on('data', (msg) => {
  if (msg.kind !== 'miss' || done) return;
  const m = msg.miss;
  const t0 = process.hrtime.bigint();
  client.InstallFlows({ flows: [{ key: m.key, action: 'FLOW_ACTION_FORWARD', next_hop: nextHop }] }, (err) => {
    if (err) { console.error(`InstallFlows: ${err.message}`); process.exit(1); }
    seen.push({ seq: m.seq, reason: m.reason, dst_port: m.key.dst_port, install_ms: Number(process.hrtime.bigint() - t0) / 1e6 });
    if (seen.length >= count && !done) {
      done = true;
      console.log(JSON.stringify({ misses: seen }));
      stream.cancel();
      client.close();
      process.exit(0);
    }
  });
});
stream.on('error', (e) => { if (!done) { console.error(e.message); process.exit(1); } });
console.log('ready');
setTimeout(() => { console.error('timed out'); process.exit(1); }, 30000);
