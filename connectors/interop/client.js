// An independent OPC UA client (node-opcua) that checks biotwin's server:
//
//   node client.js opc.tcp://127.0.0.1:4840/biotwin/ [seconds]
//
// Browses Objects > Site > Area > Line > BR-201, reads TIC-201.PV's EngineeringUnits and
// EURange, subscribes to it for `seconds` and prints one JSON line with what it saw.
"use strict";
const { OPCUAClient, AttributeIds, TimestampsToReturn, ClientSubscription, ClientMonitoredItem,
  NodeClass } = require("node-opcua");

(async () => {
  const url = process.argv[2];
  const seconds = Number(process.argv[3] || 3);
  const client = OPCUAClient.create({ endpointMustExist: false, connectionStrategy: { maxRetry: 2 } });
  await client.connect(url);
  const session = await client.createSession();
  const nsArray = await session.readNamespaceArray();
  const ns = nsArray.indexOf("urn:biotwin:plant");
  // walk down the ISA-95 levels by browsing
  let node = "ns=0;i=85";
  const path = [];
  for (let depth = 0; depth < 4; depth++) {
    const res = await session.browse(node);
    const next = res.references.find((r) => r.nodeClass === NodeClass.Object && r.nodeId.namespace === ns &&
      (depth < 3 || r.browseName.name === "BR-201"));
    path.push(next.browseName.name);
    node = next.nodeId.toString();
  }
  const unit = await session.browse(node);
  const tag = unit.references.find((r) => r.browseName.name === "TIC-201.PV");
  const props = await session.browse(tag.nodeId.toString());
  const out = { path, tag: tag.browseName.name, nodeId: tag.nodeId.toString(), values: 0 };
  for (const p of props.references) {
    const dv = await session.read({ nodeId: p.nodeId, attributeId: AttributeIds.Value });
    if (p.browseName.name === "EngineeringUnits") {
      out.unitId = dv.value.value.unitId;
      out.displayName = dv.value.value.displayName.text;
    }
    if (p.browseName.name === "EURange") out.euRange = [dv.value.value.low, dv.value.value.high];
  }
  const sub = ClientSubscription.create(session, { requestedPublishingInterval: 200,
    requestedMaxKeepAliveCount: 20, publishingEnabled: true });
  const item = ClientMonitoredItem.create(sub, { nodeId: tag.nodeId, attributeId: AttributeIds.Value },
    { samplingInterval: 0, queueSize: 100, discardOldest: true }, TimestampsToReturn.Both);
  item.on("changed", (dv) => { out.values += 1; out.lastSource = dv.sourceTimestamp; });
  await new Promise((r) => setTimeout(r, seconds * 1000));
  await sub.terminate();
  await session.close();
  await client.disconnect();
  console.log(JSON.stringify(out));
})().catch((err) => { console.log(JSON.stringify({ error: String(err) })); process.exit(1); });
