// An independent OT writer (node-opcua) that pushes values into `biotwin receive`:
//
//   node writer.js --url opc.tcp://127.0.0.1:4850/biotwin/receive --user W --password-env PW \
//     --tags tags.csv --samples 5 --batch 1000 [--mode write|insert|replace|update]
//     [--security None|Sign|SignAndEncrypt --cert c.pem --key k.pem --pki DIR]
//     [--rate VALUES_PER_S --seconds S] [--start ISO] [--step-ms 1000] [--value-offset 0]
//     [--string] [--concurrency N] [--acks] [--skip-from K --skip-to K2]
//
// Tag names are the first column of the tag file (its header skipped); node ids are
// ns=<index of urn:biotwin:receive>;s=<tag>. Sample k of tag i is the value
// i * 1000 + k + value-offset at start + k * step-ms (a Double); samples K <= k < K2 are
// left out with --skip-from/--skip-to (a gap). The values are sent
// sample by sample (all tags of sample 0, then of sample 1...), in requests of up to
// `batch` values: Write requests (--mode write), or HistoryUpdate UpdateDataDetails with
// PerformUpdateType Insert, Replace or Update (one per tag of the request). --string sends
// a String instead of each Double (to see BadTypeMismatch). With --rate, requests leave on
// a schedule (values per second) for --seconds, up to --concurrency in flight, and the
// samples follow the clock (step-ms = tags / rate, from now); otherwise one request after
// another until every sample is sent.
//
// Prints one JSON line per answered request with --acks ({"ack": n, "first": k0,
// "last": k1, "good": g, "ms": t}), then one JSON summary line: requests, values, codes
// (StatusCode name -> count), round trips (p50, p95, max in ms), seconds.
"use strict";
const fs = require("fs");
const path = require("path");
// the client's packages only (the whole of node-opcua takes a second longer to load)
const {
  OPCUAClient, MessageSecurityMode, SecurityPolicy, AttributeIds, DataType, UserTokenType,
  StatusCodes,
} = require("node-opcua-client");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");
const { HistoryUpdateRequest, UpdateDataDetails, PerformUpdateType } = require("node-opcua-types");

function options(argv) {
  const out = { samples: 1, batch: 1000, mode: "write", security: "None", stepMs: 1000,
    valueOffset: 0, concurrency: 1, rate: 0, seconds: 0, acks: false, string: false };
  const names = { "--url": "url", "--user": "user", "--password-env": "passwordEnv",
    "--tags": "tags", "--samples": "samples", "--batch": "batch", "--mode": "mode",
    "--security": "security", "--cert": "cert", "--key": "key", "--pki": "pki",
    "--rate": "rate", "--seconds": "seconds", "--start": "start", "--step-ms": "stepMs",
    "--value-offset": "valueOffset", "--concurrency": "concurrency", "--skip-from": "skipFrom",
    "--skip-to": "skipTo" };
  for (let i = 2; i < argv.length; i++) {
    if (argv[i] === "--acks") { out.acks = true; continue; }
    if (argv[i] === "--string") { out.string = true; continue; }
    const key = names[argv[i]];
    if (!key) throw new Error(`unknown option ${argv[i]}`);
    const v = argv[++i];
    if (key === "stepMs") out.stepMsGiven = true;
    out[key] = ["samples", "batch", "rate", "seconds", "stepMs", "valueOffset", "concurrency",
      "skipFrom", "skipTo"].includes(key) ? Number(v) : v;
  }
  return out;
}

function percentile(sorted, q) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

(async () => {
  const o = options(process.argv);
  const tags = fs.readFileSync(o.tags, "utf8").split(/\r?\n/).slice(1)
    .map((l) => l.split(",")[0].trim()).filter((t) => t);
  const pki = o.pki || fs.mkdtempSync(path.join(require("os").tmpdir(), "writer-pki-"));
  const certificateManager = new OPCUACertificateManager({ rootFolder: pki,
    automaticallyAcceptUnknownCertificate: true });
  await certificateManager.initialize();
  const client = OPCUAClient.create({
    applicationName: "biotwin-test-writer", applicationUri: "urn:biotwin:writer",
    endpointMustExist: false, connectionStrategy: { maxRetry: 0 },
    securityMode: MessageSecurityMode[o.security], securityPolicy:
      o.security === "None" ? SecurityPolicy.None : SecurityPolicy.Basic256Sha256,
    certificateFile: o.cert, privateKeyFile: o.key, clientCertificateManager: certificateManager,
    requestedSessionTimeout: 60000, defaultSecureTokenLifetime: 600000,
  });
  await client.connect(o.url);
  const session = await client.createSession({ type: UserTokenType.UserName, userName: o.user,
    password: process.env[o.passwordEnv || "WRITER_PASSWORD"] });
  const ns = (await session.readNamespaceArray()).indexOf("urn:biotwin:receive");
  if (o.rate && !o.stepMsGiven) o.stepMs = (tags.length / o.rate) * 1000; // real time
  const start = o.start ? Date.parse(o.start)
    : (o.rate ? Date.now() : Date.now() - o.samples * o.stepMs);
  // every value, sample-major
  const total = o.rate ? Math.round(o.rate * o.seconds) : tags.length * o.samples;
  const value = (n) => {
    const i = n % tags.length;
    const k = Math.floor(n / tags.length);
    return { tag: tags[i], k, v: i * 1000 + k + o.valueOffset, t: new Date(start + k * o.stepMs) };
  };
  const dataValue = (x) => ({
    value: o.string ? { dataType: DataType.String, value: `text ${x.v}` }
      : { dataType: DataType.Double, value: x.v },
    sourceTimestamp: x.t,
  });
  const codes = {};
  const ms = [];
  let requests = 0;
  let sent = 0;
  const skipped = (x) => o.skipFrom !== undefined && x.k >= o.skipFrom && x.k < o.skipTo;
  async function send(lo, hi) {
    const items = [];
    for (let n = lo; n < hi; n++) if (!skipped(value(n))) items.push(value(n));
    if (!items.length) return;
    const t0 = process.hrtime.bigint();
    let results;
    if (o.mode === "write") {
      results = await session.write(items.map((x) => ({ nodeId: `ns=${ns};s=${x.tag}`,
        attributeId: AttributeIds.Value, value: dataValue(x) })));
    } else {
      const byTag = new Map();
      for (const x of items) {
        if (!byTag.has(x.tag)) byTag.set(x.tag, []);
        byTag.get(x.tag).push(x);
      }
      const details = [...byTag.entries()].map(([tag, xs]) => new UpdateDataDetails({
        nodeId: `ns=${ns};s=${tag}`,
        performInsertReplace: PerformUpdateType[o.mode[0].toUpperCase() + o.mode.slice(1)],
        updateValues: xs.map(dataValue),
      }));
      const response = await new Promise((resolve, reject) => session.performMessageTransaction(
        new HistoryUpdateRequest({ historyUpdateDetails: details }),
        (err, r) => (err ? reject(err) : resolve(r))));
      results = [];
      for (const r of response.results) {
        if (r.statusCode !== StatusCodes.Good) results.push(r.statusCode);
        else results.push(...r.operationResults);
      }
    }
    const took = Number(process.hrtime.bigint() - t0) / 1e6;
    ms.push(took);
    requests += 1;
    let good = 0;
    for (const c of results) {
      codes[c.name] = (codes[c.name] || 0) + 1;
      if (c.name.startsWith("Good")) good += 1;
    }
    if (o.acks) {
      console.log(JSON.stringify({ ack: requests, first: value(lo).k, last: value(hi - 1).k,
        lo, hi, good, ms: took }));
    }
  }
  const t0 = Date.now();
  if (o.rate) {
    const every = (o.batch / o.rate) * 1000;
    const inFlight = new Set();
    for (let lo = 0, j = 0; lo < total; lo += o.batch, j++) {
      const due = t0 + j * every - Date.now();
      if (due > 0) await new Promise((r) => setTimeout(r, due));
      while (inFlight.size >= o.concurrency) await Promise.race(inFlight);
      const p = send(lo, Math.min(total, lo + o.batch)).finally(() => inFlight.delete(p));
      inFlight.add(p);
      sent += Math.min(total, lo + o.batch) - lo;
    }
    await Promise.all(inFlight);
  } else {
    for (let lo = 0; lo < total; lo += o.batch) {
      await send(lo, Math.min(total, lo + o.batch));
      sent += Math.min(total, lo + o.batch) - lo;
    }
  }
  const seconds = (Date.now() - t0) / 1000;
  await session.close();
  await client.disconnect();
  const sorted = [...ms].sort((a, b) => a - b);
  console.log(JSON.stringify({ requests, values: sent, codes, seconds,
    p50: percentile(sorted, 0.5), p95: percentile(sorted, 0.95), max: sorted[sorted.length - 1],
    start: new Date(start).toISOString(), tags: tags.length }));
  process.exit(0);
})().catch((err) => { console.log(JSON.stringify({ error: String(err) })); process.exit(1); });
