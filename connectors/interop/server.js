// An independent OPC UA server (node-opcua) for biotwin's interoperability tests and benchmark.
//
//   node server.js --port 4841 --tags 100 --rate 10 [--seconds 0]
//
// Address space under Objects/Bench:
//   ns=1;s=Bench.T00001 ... Double tags (string node ids), changing `rate` times per second
//   ns=1;i=5001           Float  "FloatTag"   (numeric node id)
//   ns=1;i=5002           Int32  "IntTag"
//   ns=1;s=Bench.Flag     Boolean
//   ns=1;s=Bench.Broken   Double with StatusCode BadSensorFailure
//   ns=1;s=Bench.Tick     UInt32: number of ticks so far (every Double tag got one value per tick)
// Prints one JSON line {"ready": true, "endpoint": ...} when listening; with --seconds N it
// stops producing after N seconds, or at SIGUSR2 (and prints {"done": true, "ticks": ...}), but
// keeps serving.
"use strict";
const { OPCUAServer, DataType, StatusCodes, Variant } = require("node-opcua");

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}

(async () => {
  const port = arg("port", 4841);
  const nTags = arg("tags", 100);
  const rate = arg("rate", 10);
  const seconds = arg("seconds", 0);
  // MinSupportedSampleRate 0: a monitored item asking for sampling interval 0 gets every change
  // (node-opcua otherwise coalesces the changes of a 50 ms window into the last one, which
  // loses ticks above 20 Hz per tag, or two ticks that come close together)
  const server = new OPCUAServer({ port, resourcePath: "/UA/node", allowAnonymous: true,
    maxAllowedSessionNumber: 50, serverCapabilities: { minSupportedSampleRate: 0 } });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  const ns = addressSpace.getOwnNamespace();
  const bench = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "Bench" });
  const tags = [];
  for (let i = 1; i <= nTags; i++) {
    const name = `T${String(i).padStart(5, "0")}`;
    tags.push(ns.addVariable({ componentOf: bench, browseName: name, nodeId: `s=Bench.${name}`,
      dataType: "Double", value: { dataType: DataType.Double, value: 0 } }));
  }
  const floatTag = ns.addVariable({ componentOf: bench, browseName: "FloatTag", nodeId: "i=5001",
    dataType: "Float", value: { dataType: DataType.Float, value: 1.5 } });
  const intTag = ns.addVariable({ componentOf: bench, browseName: "IntTag", nodeId: "i=5002",
    dataType: "Int32", value: { dataType: DataType.Int32, value: 0 } });
  const flag = ns.addVariable({ componentOf: bench, browseName: "Flag", nodeId: "s=Bench.Flag",
    dataType: "Boolean", value: { dataType: DataType.Boolean, value: false } });
  const broken = ns.addVariable({ componentOf: bench, browseName: "Broken", nodeId: "s=Bench.Broken",
    dataType: "Double", value: { dataType: DataType.Double, value: 0 } });
  broken.setValueFromSource(new Variant({ dataType: DataType.Double, value: -1 }),
    StatusCodes.BadSensorFailure, new Date());
  const tick = ns.addVariable({ componentOf: bench, browseName: "Tick", nodeId: "s=Bench.Tick",
    dataType: "UInt32", value: { dataType: DataType.UInt32, value: 0 } });
  await server.start();
  console.log(JSON.stringify({ ready: true, endpoint: server.getEndpointUrl(), tags: nTags }));

  // Tick k is due at t0 + k / rate (no drift: setInterval would add each tick's own run
  // time to the period); a late tick runs at once, so the rate asked for is the rate made.
  let n = 0;
  const t0 = Date.now();
  const period = 1000 / rate;
  let last = 0;
  let timer = null;
  let producing = true;
  function step() {
    const now = Date.now();
    if (!producing) return;
    if (seconds > 0 && now - t0 >= seconds * 1000) {
      finish();
      return;
    }
    // one timestamp per tick, strictly increasing, so (tag, source time) is a unique key
    let stamp = Math.max(now, last + 1);
    last = stamp;
    n += 1;
    const when = new Date(stamp);
    for (const v of tags) {
      v.setValueFromSource(new Variant({ dataType: DataType.Double, value: n }), StatusCodes.Good, when);
    }
    floatTag.setValueFromSource(new Variant({ dataType: DataType.Float, value: n + 0.5 }), StatusCodes.Good, when);
    intTag.setValueFromSource(new Variant({ dataType: DataType.Int32, value: n }), StatusCodes.Good, when);
    flag.setValueFromSource(new Variant({ dataType: DataType.Boolean, value: n % 2 === 0 }), StatusCodes.Good, when);
    tick.setValueFromSource(new Variant({ dataType: DataType.UInt32, value: n }), StatusCodes.Good, when);
    timer = setTimeout(step, Math.max(0, t0 + (n + 1) * period - Date.now()));
  }
  timer = setTimeout(step, period);
  function finish() {
    if (!producing) return;
    producing = false;
    clearTimeout(timer);
    console.log(JSON.stringify({ done: true, ticks: n }));
  }
  process.on("SIGUSR2", finish);  // stop producing now (the benchmark's end of a run)
  process.on("SIGTERM", async () => { producing = false; clearTimeout(timer); await server.shutdown(100); process.exit(0); });
  process.on("SIGINT", async () => { producing = false; clearTimeout(timer); await server.shutdown(100); process.exit(0); });
})();
