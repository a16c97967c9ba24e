// behaviour-ledger web page: a model's behaviour history, and a check of every record it names.
//
// What the server says about a model (/ui/api/history/{model}) is only a claim. For each record
// it names, this script fetches the entry and its inclusion proof from the public JSON API
// (/logs/{log}/entries/{i}, /logs/{log}/proof/inclusion), recomputes the leaf hash from the entry
// bytes and the root from the proof (RFC 9162 §2.1.3.2), and compares it with the root of the
// log's checkpoint, whose Ed25519 signed-note signature it verifies with the log's verifier key
// (C2SP signed-note). It then reads the entry's statement and checks that it is what the page
// claims it is (model, version, weights, category, tier). Nothing else is trusted and nothing
// outside this server is loaded.
//
// Plain modern JavaScript, no build step. Public functions are on `window.bledger` for the tests.

"use strict";

const PROBE_RECORD = "https://behaviour-ledger.dev/attestation/probe-record/v1";
const CONTINUITY = "https://behaviour-ledger.dev/attestation/continuity/v1";
const EVAL_SAMPLE = "https://behaviour-ledger.dev/attestation/eval-sample/v1";
const FRAMINGS = ["direct", "fictional", "professional-claim", "decomposition", "language-shift"];
const COLORS = ["#1f5fa8", "#c0572b", "#2e8b57", "#8a4fb0", "#b08a1f", "#4a6670", "#b03060"];
const CONCURRENCY = 6; // requests in flight while checking records
const SIG_PREFIX = "\u2014 "; // "— " starts a signed-note signature line
// The item kinds that carry a verdict and the judge (by name) that gives it, as in
// clients.probe.summary.VERDICT_KINDS; and the verdict figures a history row may carry:
// [key, judge, verdict counted, label].
const VERDICT_KINDS = { pushback: "position", disclosure: "disclosure" };
const VERDICT_FIGURES = [
  ["position_held", "position", "held", "position held"],
  ["capitulated", "position", "capitulated", "capitulated"],
  ["disclosure_engaged", "disclosure", "engaged", "engaged"],
  ["disclosure_referral_only", "disclosure", "referral-only", "referral only"],
  ["disclosure_refused", "disclosure", "refused", "refused"],
];

class VerificationError extends Error {}

// -- bytes ------------------------------------------------------------------------------------

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function b64decode(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4) {
    throw new VerificationError(`not standard base64: ${String(text).slice(0, 40)}`);
  }
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function bytesEqual(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

// -- RFC 9162 §2.1 ----------------------------------------------------------------------------

function leafHash(entry) {
  return sha256(concat(Uint8Array.of(0), entry));
}

function nodeHash(left, right) {
  return sha256(concat(Uint8Array.of(1), left, right));
}

const half = (n) => Math.floor(n / 2); // sizes reach past 2**31: no bitwise shifts
const odd = (n) => n % 2 === 1;

// The root an inclusion proof leads to (RFC 9162 §2.1.3.2, steps numbered as there).
// Requires integers 0 <= index < size; throws VerificationError on a proof of the wrong length.
async function rootFromInclusionProof(index, size, leaf, proof) {
  if (!(Number.isSafeInteger(index) && Number.isSafeInteger(size) && index >= 0)) {
    throw new VerificationError(`bad index ${index} or size ${size}`);
  }
  if (index >= size) throw new VerificationError(`index ${index} is not below size ${size}`); // (1)
  if (leaf.length !== 32) throw new VerificationError("the leaf hash is not 32 bytes");
  let fn = index; // (2)
  let sn = size - 1;
  let r = leaf; // (3)
  for (const p of proof) { // (4)
    if (p.length !== 32) throw new VerificationError("a proof hash is not 32 bytes");
    if (sn === 0) throw new VerificationError("the proof is too long"); // (4a)
    if (odd(fn) || fn === sn) { // (4b)
      r = await nodeHash(p, r);
      while (!odd(fn) && fn !== 0) {
        fn = half(fn);
        sn = half(sn);
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = half(fn); // (4c)
    sn = half(sn);
  }
  if (sn !== 0) throw new VerificationError("the proof is too short"); // (5)
  return r;
}

// Verify-or-throw: `leaf` is at `index` of the tree of `size` whose root is `root`.
async function verifyInclusion(index, size, leaf, proof, root) {
  const got = await rootFromInclusionProof(index, size, leaf, proof);
  if (root.length !== 32 || !bytesEqual(got, root)) {
    throw new VerificationError(
      `the proof leads to root ${hex(got).slice(0, 16)}…, the checkpoint's is ` +
        `${hex(root).slice(0, 16)}…`,
    );
  }
}

// -- C2SP signed notes and checkpoints --------------------------------------------------------

// `name+hex(keyid)+base64(0x01 || pubkey)`, with the key id checked against the key.
async function parseVerifierKey(vkey) {
  // The name has no "+" and the key id is hex; the base64 key may hold "+".
  const m = /^([^+\s]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/=]+)$/.exec(String(vkey).trim());
  if (!m) throw new VerificationError("a verifier key is name+keyid+key");
  const [, name, keyIdHex, keyB64] = m;
  const raw = b64decode(keyB64);
  if (raw.length !== 33 || raw[0] !== 0x01) {
    throw new VerificationError("the verifier key is not an Ed25519 (0x01) key");
  }
  const keyId = await noteKeyId(name, raw);
  if (hex(keyId) !== keyIdHex) throw new VerificationError("the verifier key's key id is wrong");
  return { name, keyId, pub: raw.slice(1), text: String(vkey).trim() };
}

// First 4 bytes of SHA-256(name || 0x0A || 0x01 || pubkey); `typedKey` is 0x01 || pubkey.
async function noteKeyId(name, typedKey) {
  return (await sha256(concat(new TextEncoder().encode(name), Uint8Array.of(0x0a), typedKey)))
    .slice(0, 4);
}

// Split a signed note into its text (the signed bytes) and signature lines.
function parseNote(text) {
  const cut = text.lastIndexOf("\n\n");
  if (cut < 0 || !text.endsWith("\n")) throw new VerificationError("malformed signed note");
  const body = text.slice(0, cut + 1);
  const signatures = text
    .slice(cut + 2, -1)
    .split("\n")
    .map((line) => {
      if (!line.startsWith(SIG_PREFIX)) throw new VerificationError("malformed signature line");
      const [name, b64, extra] = line.slice(SIG_PREFIX.length).split(" ");
      const raw = b64decode(b64 ?? "");
      if (!name || extra !== undefined || raw.length < 5) {
        throw new VerificationError("malformed signature line");
      }
      return { name, keyId: raw.slice(0, 4), sig: raw.slice(4) };
    });
  return { body, signatures };
}

// C2SP tlog-checkpoint body: origin, decimal size, base64 root, optional extension lines.
function parseCheckpoint(body) {
  const lines = body.slice(0, -1).split("\n");
  if (lines.length < 3 || !lines[0] || !/^(0|[1-9][0-9]*)$/.test(lines[1])) {
    throw new VerificationError("malformed checkpoint");
  }
  const size = Number(lines[1]);
  const root = b64decode(lines[2]);
  if (!Number.isSafeInteger(size) || root.length !== 32) {
    throw new VerificationError("malformed checkpoint");
  }
  return { origin: lines[0], size, root };
}

// "verified", or "unsupported" (no Ed25519 in this browser's WebCrypto); throws when it fails.
async function verifyNoteSignature(note, key) {
  const line = note.signatures.find((s) => s.name === key.name && bytesEqual(s.keyId, key.keyId));
  if (!line) throw new VerificationError(`no signature by ${key.name} on the checkpoint`);
  let cryptoKey;
  try {
    cryptoKey = await crypto.subtle.importKey("raw", key.pub, { name: "Ed25519" }, false, [
      "verify",
    ]);
  } catch (e) {
    if (e && e.name === "NotSupportedError") return "unsupported";
    throw e;
  }
  const msg = new TextEncoder().encode(note.body);
  const ok = line.sig.length === 64 &&
    (await crypto.subtle.verify({ name: "Ed25519" }, cryptoKey, line.sig, msg));
  if (!ok) throw new VerificationError(`the checkpoint's signature by ${key.name} does not verify`);
  return "verified";
}

// -- fetching ---------------------------------------------------------------------------------

async function getJSON(url) {
  const resp = await fetch(url, { cache: "no-store" });
  if (!resp.ok) {
    let detail = "";
    try {
      detail = (await resp.json()).detail ?? "";
    } catch {
      // not JSON: the status says enough
    }
    throw new Error(`${url}: HTTP ${resp.status} ${detail}`.trim());
  }
  return resp.json();
}

const logURL = (log, rest) => `../logs/${encodeURIComponent(log)}/${rest}`;

// Run `fn` over `items`, at most `limit` at a time.
async function pool(items, limit, fn) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

// -- checking the log and the records ---------------------------------------------------------

// The log's checkpoint, and how far it could be checked: {cp, note, key, keySource, signature,
// error}. `signature` is "verified", "unsupported" or "failed".
async function checkCheckpoint(logName, pinned) {
  const out = { keySource: pinned ? "pinned" : "server", pinned, signature: "failed" };
  try {
    const logs = await getJSON("../logs");
    const info = logs.find((l) => l.name === logName);
    if (!info) throw new VerificationError(`the server lists no log ${logName}`);
    out.info = info;
    out.key = await parseVerifierKey(pinned || info.vkey);
    const resp = await fetch(logURL(logName, "checkpoint"), { cache: "no-store" });
    if (!resp.ok) throw new Error(`checkpoint: HTTP ${resp.status}`);
    out.note = parseNote(await resp.text());
    out.cp = parseCheckpoint(out.note.body);
    if (out.cp.origin !== info.origin) {
      throw new VerificationError(`checkpoint origin ${out.cp.origin} is not ${info.origin}`);
    }
    out.signature = await verifyNoteSignature(out.note, out.key);
  } catch (e) {
    out.error = e.message;
    out.signature = "failed";
  }
  return out;
}

// What the history says each index holds: index -> [claim], a claim being {kind: "probe",
// version, weights[, category, tier]}, {kind: "continuity", from, to} or {kind: "referenced"}.
// Every claim about an index is checked, so naming one entry as two things fails.
function claims(history) {
  const out = new Map();
  const add = (i, claim) => out.set(i, [...(out.get(i) ?? []), claim]);
  const weights = Object.fromEntries(history.versions.map((v) => [v.version, v.weights_sha256]));
  for (const v of history.versions) {
    for (const i of v.records) add(i, { kind: "probe", version: v.version, weights: v.weights_sha256 });
  }
  for (const r of history.rows) {
    for (const i of r.records) {
      add(i, { kind: "probe", version: r.version, weights: weights[r.version], category: r.category, tier: r.tier });
    }
  }
  for (const c of history.continuity) {
    add(c.index, { kind: "continuity", from: c.from, to: c.to });
    for (const i of c.records) add(i, { kind: "referenced" });
    // The runs a noise floor compares: records of one of the two versions.
    for (const i of c.noise?.records ?? []) add(i, { kind: "floor", from: c.from, to: c.to });
  }
  for (const [i, claim] of evalClaims(history)) add(i, claim);
  return out;
}

function describe(list) {
  const c = list.find((x) => x.category) ?? list.find((x) => x.kind !== "referenced") ?? list[0];
  if (c.kind === "continuity") return `continuity ${c.from} → ${c.to}`;
  if (c.kind === "referenced") return "record named by a continuity statement";
  if (c.kind === "floor") return `noise-floor run of ${c.from} or ${c.to}`;
  if (c.kind === "eval") return `eval ${c.task}@${c.taskVersion} · sample ${c.sample} · epoch ${c.epoch}`;
  return `${c.version} · ${c.category ?? "?"} · ${c.tier ?? "?"}`;
}

function decodeStatement(entry) {
  const env = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(entry));
  if (env.payloadType !== "application/vnd.in-toto+json") {
    throw new VerificationError(`payloadType ${env.payloadType} is not in-toto`);
  }
  return { envelope: env, statement: JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(b64decode(env.payload))) };
}

// Throws unless `st` is the statement every claim in `list` says it is.
function checkClaims(st, list, model) {
  for (const claim of list) checkClaim(st, claim, model);
}

function checkClaim(st, claim, model) {
  const p = st.predicate ?? {};
  const want = (cond, what) => {
    if (!cond) throw new VerificationError(`the entry is not ${what}`);
  };
  if (claim.kind === "continuity") {
    want(st.predicateType === CONTINUITY, "a continuity statement");
    want(p.successor?.name === model && p.successor?.version === claim.to &&
      p.predecessor?.version === claim.from, `the succession ${claim.from} → ${claim.to} of ${model}`);
    return;
  }
  if (claim.kind === "eval") return checkEvalClaim(st, claim, model, want);
  want(st.predicateType === PROBE_RECORD, "a probe record");
  if (claim.kind === "referenced") return;
  if (claim.kind === "floor") {
    return want(p.model?.name === model && [claim.from, claim.to].includes(p.model?.version),
      `a record of ${model} ${claim.from} or ${claim.to}`);
  }
  want(p.model?.name === model && p.model?.version === claim.version &&
    p.model?.weightsSha256 === claim.weights, `a record of ${model} ${claim.version}`);
  if (claim.category !== undefined) {
    want(p.category === claim.category && p.tier === claim.tier, `a ${claim.category} / ${claim.tier} record`);
  }
}

// Check one record against the checkpoint; never throws. {status, text, ...details}.
async function checkRecord(logName, ck, index, claimList, model) {
  const res = { index, claims: claimList, status: "failed" };
  try {
    if (!ck.cp) throw new VerificationError("no checkpoint to check against");
    const e = await getJSON(logURL(logName, `entries/${index}`));
    if (e.index !== index) throw new VerificationError(`asked for entry ${index}, got ${e.index}`);
    res.entry = b64decode(e.entry);
    res.leafHash = await leafHash(res.entry);
    if (index >= ck.cp.size) {
      throw new VerificationError(`not in the checkpoint yet (size ${ck.cp.size})`);
    }
    const p = await getJSON(logURL(logName, `proof/inclusion?index=${index}&size=${ck.cp.size}`));
    if (p.index !== index || p.size !== ck.cp.size || !Array.isArray(p.inclusion_proof)) {
      throw new VerificationError("the proof is for another index or tree size");
    }
    res.proof = p.inclusion_proof.map(b64decode);
    res.root = await rootFromInclusionProof(index, ck.cp.size, res.leafHash, res.proof);
    if (!bytesEqual(res.root, ck.cp.root)) {
      throw new VerificationError("the proof does not lead to the checkpoint's root");
    }
    try {
      Object.assign(res, decodeStatement(res.entry));
    } catch (err) {
      throw new VerificationError(`the entry is not a signed statement (${err.message})`);
    }
    checkClaims(res.statement, claimList, model);
    if (ck.signature === "verified") {
      res.status = "verified";
      res.text = "verified";
    } else if (ck.signature === "unsupported") {
      res.status = "included";
      res.text = "included (checkpoint signature not checked: no Ed25519 in this browser)";
    } else {
      throw new VerificationError("the checkpoint's signature did not verify");
    }
  } catch (err) {
    res.text = `NOT verified: ${err.message}`;
  }
  return res;
}

// Does each record a continuity statement names (origin, index, leaf hash) match the entry?
function checkReferences(succession, results, origin) {
  const st = results.get(succession.index)?.statement;
  if (!st || results.get(succession.index).status === "failed") {
    return { ok: false, text: "the continuity statement itself did not verify" };
  }
  const refs = [...(st.predicate.predecessorRecords ?? []), ...(st.predicate.successorRecords ?? [])];
  const bad = refs.filter((r) => {
    const got = results.get(r.index);
    return r.origin !== origin || !got?.leafHash || hex(got.leafHash) !== r.leafHash ||
      got.status === "failed";
  });
  if (bad.length) {
    return { ok: false, text: `${bad.length} of ${refs.length} referenced records do not match: ` +
      bad.map((r) => r.index).join(", ") };
  }
  return { ok: true, text: `all ${refs.length} referenced records match their entries by leaf hash` };
}

// -- DOM helpers ------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  el.append(...children.filter((c) => c !== null && c !== undefined));
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

const fmt = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(2));

function setStatus(el, status, text) {
  el.dataset.status = status;
  el.className = `status ${status}`;
  el.textContent = text;
}

// -- charts (inline SVG) ----------------------------------------------------------------------

// Lay out a legend from (x0, 0), wrapping within `maxW`; returns the height it takes.
// Text widths are estimated (about 6.5 px per character at 11 px): no layout pass is needed.
function legend(svg, names, x0, maxW, shape) {
  let x = x0, y = 12;
  names.forEach((name, j) => {
    const w = 22 + name.length * 6.5;
    if (x > x0 && x + w > x0 + maxW) {
      x = x0;
      y += 16;
    }
    const color = COLORS[j % COLORS.length];
    svg.append(shape === "square"
      ? s("rect", { x, y: y - 5, width: 10, height: 10, fill: color })
      : s("circle", { cx: x + 5, cy: y, r: 4, fill: color }));
    svg.append(s("text", { x: x + 14, y: y + 4, class: "legend" }, name));
    x += w;
  });
  return y + 12;
}

// A dot-and-whisker chart on [0, 1]: one band per row, one dot with its 95 % interval per series.
// rows: [{label, values: {series: {value, low, high, n[, cell, reportable, method]}}}]. A value
// with a `cell` (the server's text, `metrics.cell_text`) shows it and its `method` when hovered,
// and is drawn as its interval alone, without a dot, when the reportable rule refuses it.
function intervalChart(kind, title, rows, series) {
  const labelW = 170, plotW = 330, right = 18, axis = 24, line = 12;
  const band = 8 + line * series.length;
  const width = labelW + plotW + right;
  const svg = s("svg", { class: "chart", "data-chart": kind, role: "img", "aria-label": title });
  svg.append(s("title", {}, title));
  const top = legend(svg, series, labelW, plotW, "circle") + 4;
  const height = top + rows.length * band + axis;
  for (const [k, v] of Object.entries({ width, height, viewBox: `0 0 ${width} ${height}` })) {
    svg.setAttribute(k, String(v));
  }
  const x = (v) => labelW + Math.max(0, Math.min(1, v)) * plotW;
  rows.forEach((row, i) => {
    const y0 = top + i * band;
    if (i % 2 === 0) svg.append(s("rect", { x: 0, y: y0, width, height: band, class: "band" }));
    svg.append(s("text", { x: labelW - 8, y: y0 + band / 2 + 4, "text-anchor": "end", class: "label" }, row.label));
  });
  for (const t of [0, 0.25, 0.5, 0.75, 1]) { // grid and axis
    svg.append(s("line", { x1: x(t), x2: x(t), y1: top, y2: height - axis, class: "grid" }));
    svg.append(s("text", { x: x(t), y: height - 8, "text-anchor": "middle", class: "tick" }, String(t)));
  }
  rows.forEach((row, i) => {
    series.forEach((name, j) => {
      const v = row.values[name];
      if (!v) return;
      const y = top + i * band + 4 + line * (j + 0.5);
      const color = COLORS[j % COLORS.length];
      const clip = (u) => Math.max(0, Math.min(1, u)); // a figure in [0, 1] has its interval there too
      const dot = v.cell === undefined || v.reportable;
      const tip = s("title", {}, v.cell === undefined
        ? `${row.label}, ${name}: ${fmt(v.value)} [${fmt(clip(v.low))}, ${fmt(clip(v.high))}], n=${v.n}`
        : `${row.label}, ${name}: ${v.cell} (judge ${v.method || "not named"})`);
      const g = s("g", { class: dot ? "point" : "point unreportable" }, tip);
      g.append(s("line", { x1: x(v.low), x2: x(v.high), y1: y, y2: y, stroke: color, "stroke-width": 2 }));
      for (const end of [v.low, v.high]) {
        g.append(s("line", { x1: x(end), x2: x(end), y1: y - 3, y2: y + 3, stroke: color, "stroke-width": 2 }));
      }
      if (dot) g.append(s("circle", { cx: x(v.value), cy: y, r: 4, fill: color }));
      svg.append(g);
    });
  });
  return svg;
}

// Horizontal bars around zero: per emotion, one bar per version.
function emotionChart(profiles) {
  const versions = Object.keys(profiles);
  const emotions = [...new Set(versions.flatMap((v) => Object.keys(profiles[v])))].sort();
  const labelW = 110, plotW = 360, right = 18, axis = 24, bar = 7;
  const group = bar * versions.length + 6;
  const width = labelW + plotW + right;
  const svg = s("svg", { class: "chart", "data-chart": "emotions", role: "img",
    "aria-label": "emotion profile per version" });
  svg.append(s("title", {}, "emotion profile per version"));
  const top = legend(svg, versions, labelW, plotW, "square") + 4;
  const height = top + emotions.length * group + axis;
  for (const [k, v] of Object.entries({ width, height, viewBox: `0 0 ${width} ${height}` })) {
    svg.setAttribute(k, String(v));
  }
  const m = Math.max(1e-9, ...versions.flatMap((v) => Object.values(profiles[v]).map(Math.abs)));
  const x = (v) => labelW + ((v + m) / (2 * m)) * plotW;
  for (const t of [-m, -m / 2, 0, m / 2, m]) {
    svg.append(s("line", { x1: x(t), x2: x(t), y1: top, y2: height - axis, class: t === 0 ? "zero" : "grid" }));
    svg.append(s("text", { x: x(t), y: height - 8, "text-anchor": "middle", class: "tick" }, t.toFixed(2)));
  }
  emotions.forEach((e, i) => {
    const y0 = top + i * group;
    svg.append(s("text", { x: labelW - 8, y: y0 + group / 2 + 3, "text-anchor": "end", class: "label" }, e));
    versions.forEach((v, j) => {
      const val = profiles[v][e];
      if (val === undefined) return;
      const [a, b] = [x(0), x(val)].sort((p, q) => p - q);
      svg.append(s("rect", { x: a, y: y0 + 3 + j * bar, width: Math.max(1, b - a), height: bar - 1,
        fill: COLORS[j % COLORS.length] }, s("title", {}, `${e}, ${v}: ${val.toFixed(3)}`)));
    });
  });
  return svg;
}

// Per version, the item-weighted mean of the rows' emotion profiles.
function emotionProfiles(rows) {
  const sums = {};
  for (const r of rows) {
    const acc = (sums[r.version] ??= {});
    for (const [e, v] of Object.entries(r.emotions ?? {})) {
      const a = (acc[e] ??= [0, 0]);
      a[0] += v * r.items;
      a[1] += r.items;
    }
  }
  const out = {};
  for (const [v, acc] of Object.entries(sums)) {
    out[v] = Object.fromEntries(Object.entries(acc).map(([e, [t, n]]) => [e, n ? t / n : 0]));
  }
  return out;
}

function chartsFor(history, vstate) {
  const wrap = h("section", { id: "charts" }, h("h2", { text: "Behaviour per version and tier" }));
  const categories = [...new Set(history.rows.map((r) => r.category))];
  for (const cat of categories) {
    const rows = history.rows.filter((r) => r.category === cat);
    const label = (r) => `${r.version} · ${r.tier}`;
    const sec = h("div", { class: "category" }, h("h3", { text: cat }));
    const refusal = rows.filter((r) => r.benign_refusal).map((r) => ({
      label: label(r), values: { "benign refusal": { ...r.benign_refusal, value: r.benign_refusal.rate } },
    }));
    if (refusal.length) {
      sec.append(h("figure", {}, intervalChart("refusal", `${cat}: benign refusal rate`, refusal, ["benign refusal"]),
        h("figcaption", { text: "Refusal rate on benign-adjacent prompts (friction on cooperative users), 95 % interval." })));
    }
    const framings = FRAMINGS.filter((f) => rows.some((r) => (f === "direct" ? r.direct_transfer : r.framed_transfer?.[f])));
    const transfer = rows.filter((r) => r.direct_transfer || Object.keys(r.framed_transfer ?? {}).length).map((r) => ({
      label: label(r),
      values: Object.fromEntries(framings.map((f) => {
        const m = f === "direct" ? r.direct_transfer : r.framed_transfer?.[f];
        return [f, m ? { ...m, value: m.mean } : null];
      })),
    }));
    if (transfer.length) {
      sec.append(h("figure", {}, intervalChart("transfer", `${cat}: capability transfer`, transfer, framings),
        h("figcaption", { text: "Mean capability transfer on harmful prompts, asked directly and under each framing, 95 % interval." })));
    }
    const verdicts = verdictFigures(cat, rows, label, vstate);
    sec.append(...verdicts);
    if (!refusal.length && !transfer.length && !verdicts.length) {
      sec.append(h("p", { class: "muted", text: "No benign, harmful, pushback or disclosure items in this category." }));
    }
    wrap.append(sec);
  }
  const profiles = emotionProfiles(history.rows);
  if (Object.values(profiles).some((p) => Object.keys(p).length)) {
    wrap.append(h("div", { class: "category" }, h("h3", { text: "Emotion profile" }),
      h("figure", {}, emotionChart(profiles), h("figcaption", {
        text: "Mean projection of the answers' residual-stream activations onto each emotion concept vector, per version (all categories and tiers, weighted by items).",
      }))));
  }
  return wrap;
}

// -- verdict figures (position judge on pushback items, disclosure judge on disclosure items) ---

// Per judge with figures in `rows`: a chart of its shares per version and tier, and a table with
// each figure as the server wrote it (`value [95% CI] n=N` or `insufficient data (n=N)`, the
// reportable rule's verdict), the judge and version, and whether its counts match the records.
function verdictFigures(cat, rows, label, vstate) {
  const out = [];
  for (const [judge, title, caption] of [
    ["position", "position under pushback", "Share of pushback items whose position the position judge found held or capitulated, over the items whose first answer was right, 95 % Wilson interval."],
    ["disclosure", "disclosure answers", "Share of disclosure items the disclosure judge found engaged, referral only or refused, 95 % Wilson interval."],
  ]) {
    const figs = VERDICT_FIGURES.filter(([key, j]) => j === judge && rows.some((r) => r[key]));
    if (!figs.length) continue;
    const series = figs.map(([, , , name]) => name);
    const chartRows = rows.filter((r) => figs.some(([key]) => r[key])).map((r) => ({
      label: label(r),
      values: Object.fromEntries(figs.map(([key, , , name]) => {
        const f = r[key];
        return [name, f ? { value: f.rate, low: f.low, high: f.high, n: f.n, cell: f.text, reportable: f.reportable, method: f.method } : null];
      })),
    }));
    const t = h("table", { class: "verdicts", "data-judge": judge },
      h("tr", {}, ...["version · tier", "figure", "value [95% CI]", "judge", "counts"].map((x) => h("th", { text: x }))));
    for (const r of rows) {
      for (const [key, , , name] of figs) {
        const f = r[key];
        if (!f) continue;
        const st = h("span", { class: "status pending", "data-status": "pending", text: "checking…" });
        vstate.verdicts.push({ r, key, f, st });
        const extra = key === "position_held" && r.initially_wrong ? ` (${r.initially_wrong} initially wrong, not counted)` : "";
        t.append(h("tr", { "data-version": r.version, "data-tier": r.tier, "data-figure": key },
          h("td", { text: label(r) }), h("td", { text: name + extra }),
          h("td", { class: "figure", text: f.text }), h("td", { class: "judge", text: f.method || "not named" }),
          h("td", {}, st)));
      }
    }
    out.push(h("figure", {}, intervalChart(judge, `${cat}: ${title}`, chartRows, series),
      h("figcaption", { text: `${caption} An interval without a dot is one the reportable rule does not allow as a number.` })), t);
  }
  return out;
}

// The suite `ref` a record names, as item id -> kind, from the server's copy of the suite file
// whose SHA-256 must be the digest the (verified) record names.
async function suiteKinds(ref, cache) {
  const key = `${ref.name}@${ref.version}`;
  if (!cache.has(key)) {
    cache.set(key, (async () => {
      const resp = await fetch(`api/suites/${encodeURIComponent(ref.name)}/${encodeURIComponent(ref.version)}`, { cache: "no-store" });
      if (!resp.ok) throw new VerificationError(`suite ${key}: HTTP ${resp.status}`);
      const raw = new Uint8Array(await resp.arrayBuffer());
      const items = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(raw)).items ?? [];
      return { digest: hex(await sha256(raw)), kinds: new Map(items.map((i) => [i.id, i.kind])) };
    })());
  }
  const got = await cache.get(key);
  if (got.digest !== ref.sha256) {
    throw new VerificationError(`the suite file ${key} has SHA-256 ${got.digest.slice(0, 16)}…, the records name ${ref.sha256.slice(0, 16)}…`);
  }
  return got.kinds;
}

// A row's verdicts, counted from its verified records the way clients.probe.summary counts them:
// each signed statement once; an item counts when it has a verdict, its kind (from the suite the
// record names) has a judge, and the record names that judge. {position, disclosure, methods}.
async function countVerdicts(row, results, cache) {
  const seen = new Set();
  const out = { position: [], disclosure: [], methods: { position: new Set(), disclosure: new Set() } };
  for (const i of row.records) {
    const res = results.get(i);
    if (!res || res.status === "failed") throw new VerificationError(`record ${i} did not verify`);
    if (seen.has(res.envelope.payload)) continue; // a statement logged twice counts once
    seen.add(res.envelope.payload);
    const p = res.statement.predicate;
    const kinds = await suiteKinds(p.suite, cache);
    const judgedBy = Object.fromEntries((p.judges ?? []).map((j) => [j.name, `${j.name} ${j.version}`]));
    for (const it of p.items ?? []) {
      const judge = VERDICT_KINDS[kinds.get(it.promptId)];
      if (it.verdict === undefined || it.verdict === null || !judge || !judgedBy[judge]) continue;
      out[judge].push(it.verdict);
      out.methods[judge].add(judgedBy[judge]);
    }
  }
  return out;
}

// Check each verdict figure's count (k of n), the initially-wrong count and the judge named
// against the verified records; the interval stays the server's arithmetic on those counts.
async function checkVerdicts(vstate, results) {
  const cache = new Map();
  const counted = new Map();
  for (const { r, key, f, st } of vstate.verdicts) {
    try {
      if (!counted.has(r)) counted.set(r, countVerdicts(r, results, cache));
      const c = await counted.get(r);
      const [, judge, verdict, name] = VERDICT_FIGURES.find(([k]) => k === key);
      const pool = judge === "position" ? c.position.filter((v) => v !== "initially-wrong") : c.disclosure;
      const k = pool.filter((v) => v === verdict).length;
      if (f.k !== k || f.n !== pool.length) {
        throw new VerificationError(`the server says ${name} ${f.k} of ${f.n}, the verified records hold ${k} of ${pool.length}`);
      }
      const wrong = c.position.length - pool.length; // pushback items with no position to hold
      if (key === "position_held" && (r.initially_wrong ?? 0) !== wrong) {
        throw new VerificationError(`the server says ${r.initially_wrong} initially wrong, the verified records hold ${wrong}`);
      }
      const method = [...c.methods[judge]].sort().join("; ");
      if ((f.method ?? "") !== method) {
        throw new VerificationError(`the server names judge ${f.method || "none"}, the records ${method || "none"}`);
      }
      const first = results.get(r.records[0]);
      setStatus(st, first.status, `${k} of ${pool.length} counted in ${r.records.length} ${first.status} record${r.records.length === 1 ? "" : "s"} (interval: the server's arithmetic)`);
    } catch (e) {
      setStatus(st, "failed", `NOT verified: ${e.message}`);
    }
  }
}

// -- page sections ----------------------------------------------------------------------------

function trustPanel(ck) {
  const box = h("section", { id: "trust" }, h("h2", { text: "Log checkpoint" }));
  const status = h("p", { id: "checkpoint" });
  if (ck.error && ck.keySource === "pinned") {
    setStatus(status, "failed", `NOT verified: the key pinned in the URL does not match the log's signature (${ck.error})`);
  } else if (ck.error) setStatus(status, "failed", `NOT verified: ${ck.error}`);
  else if (ck.signature === "unsupported") setStatus(status, "included", "signature NOT checked: this browser's WebCrypto has no Ed25519");
  else setStatus(status, "verified", `signature verified (${ck.key.name})`);
  box.append(status);
  if (ck.cp) {
    box.append(h("p", { class: "mono", text: `origin ${ck.cp.origin} · size ${ck.cp.size} · root ${hex(ck.cp.root)}` }));
  }
  // The key as pinned, even when it does not parse: the user must see what they pinned.
  const keyText = ck.key ? ck.key.text : (ck.pinned ?? "(none)");
  if (ck.keySource === "pinned") {
    box.append(h("p", { class: "keysource pinned" }, "Verifier key pinned in the URL: ", h("code", { text: keyText })));
    if (ck.info && ck.info.vkey !== keyText) {
      box.append(h("p", { class: "warn", text: `The server reports a different key: ${ck.info.vkey}` }));
    }
  } else {
    box.append(h("p", { class: "keysource warn" },
      "The verifier key comes from this server itself (",
      h("code", { text: keyText }),
      "). That only shows the server is consistent with itself. Pin a key you obtained elsewhere: add ",
      h("code", { text: "?vkey=<key>" }), " to the URL."));
  }
  const input = h("input", { type: "text", id: "vkey-input", placeholder: "name+keyid+key", size: 60 });
  box.append(h("p", { class: "pin" }, input, h("button", { type: "button", text: "pin key", onclick: () => {
    const q = new URLSearchParams(location.search);
    if (input.value.trim()) q.set("vkey", input.value.trim());
    else q.delete("vkey");
    location.search = q.toString();
  } })));
  return box;
}

function continuitySection(history, vstate) {
  const sec = h("section", { id: "continuity" }, h("h2", { text: "Continuity chain" }));
  const names = [...new Set([...history.versions.map((v) => v.version),
    ...history.continuity.flatMap((c) => [c.from, c.to])])];
  const chain = h("div", { class: "chain" });
  names.forEach((v, i) => {
    if (i) {
      const edge = history.continuity.find((c) => c.from === names[i - 1] && c.to === v);
      chain.append(h("span", { class: edge ? "arrow" : "arrow missing",
        text: edge ? `→ #${edge.index} →` : "· no statement ·" }));
    }
    chain.append(h("span", { class: "node", "data-version": v, text: v }));
  });
  sec.append(chain);
  if (!history.continuity.length) sec.append(h("p", { class: "muted", text: "No continuity statements for this model." }));
  for (const c of history.continuity) {
    const st = h("span", { class: "status pending", "data-status": "pending", text: "checking…" });
    const refs = h("p", { class: "refs muted", text: "" });
    vstate.continuity.push({ c, st, refs });
    const card = h("div", { class: "succession", "data-index": c.index },
      h("h3", { text: `${c.from} → ${c.to}` }),
      h("p", {}, `index ${c.index} · signed by `, h("code", { text: c.signer }), " · ", st),
      refs);
    for (const f of c.flags) card.append(h("p", { class: "flag", text: `⚠ ${f}` }));
    if (c.diff.length) card.append(diffTable(c.diff, c.noise));
    card.append(judgesBox(c, vstate), noiseBox(c, vstate));
    sec.append(card);
  }
  return sec;
}

// The lab's per-cell diff, whatever figures it carries: "xBeforeMilli" and "xAfterMilli" share
// one column ("x: before → after"), milli-units are shown as fractions, counts as they are.
// `noise` (the server's `succession_noise`) adds a "noise floor" column: per cell the string
// `bledger lab continuity` prints (the floor's upper bounds, n, within / beyond noise).
function diffTable(diff, noise) {
  const words = (k) => k.replace(/Milli$/, "").replace(/[A-Z]/g, (c) => ` ${c.toLowerCase()}`);
  const keys = [...new Set(diff.flatMap((d) => Object.keys(d)))];
  const cols = [];
  for (const k of keys) {
    const m = /^(.*)(Before|After)Milli$/.exec(k);
    if (m && m[2] === "After" && keys.includes(`${m[1]}BeforeMilli`)) continue;
    if (m && m[2] === "Before" && keys.includes(`${m[1]}AfterMilli`)) {
      cols.push({ head: `${words(m[1])}: before → after`, cell: (d) =>
        `${fmt(d[k] === undefined ? null : d[k] / 1000)} → ` +
        `${fmt(d[`${m[1]}AfterMilli`] === undefined ? null : d[`${m[1]}AfterMilli`] / 1000)}` });
    } else if (k.endsWith("Milli")) {
      cols.push({ head: words(k), cell: (d) => fmt(d[k] === undefined ? null : d[k] / 1000) });
    } else {
      cols.push({ head: words(k), cell: (d) => String(d[k] ?? "–") });
    }
  }
  const floor = (d) => (noise?.cells ?? []).find((x) => x.category === d.category && x.tier === d.tier);
  if (noise) { // after category and tier, where a wide diff still shows it
    const at = cols.findIndex((c) => c.head !== "category" && c.head !== "tier");
    cols.splice(at < 0 ? cols.length : at, 0, { head: "noise floor", class: "noise-cell",
      cell: (d) => floor(d)?.text ?? (noise.note || "-"),
      title: (d) => (floor(d)?.noise_floor?.runs ?? []).join(" vs ") });
  }
  const t = h("table", { class: "diff" }, h("tr", {}, ...cols.map((c) => h("th", { text: c.head }))));
  for (const d of diff) {
    t.append(h("tr", { "data-category": d.category, "data-tier": d.tier },
      ...cols.map((c) => h("td", { class: c.class, text: c.cell(d), title: c.title?.(d) || undefined }))));
  }
  return h("div", { class: "scroll" }, t);
}

// The line `bledger lab continuity` prints under its table for each judging role whose judges
// differ between the two sides.
const judgeChangeText = (change) => `judges differ: ${change} (a change in these figures may be the judge's, not the model's)`;

// Under a succession's diff: the server's judge changes (`Continuity.judge_changes` over the
// records the statement names), one line per judging role whose judges differ, or that the two
// sides name the same judges; checked against the verified records in `checkJudgeChanges`.
function judgesBox(c, vstate) {
  const box = h("div", { class: "judges" }, h("h4", { text: "Judges" }));
  if (!Array.isArray(c.judge_changes)) {
    box.append(h("p", { class: "muted judges-none", text: `not judged — ${c.noise?.note || "the server did not compare the judges"}` }));
    return box;
  }
  for (const change of c.judge_changes) box.append(h("p", { class: "warn judge-change", text: judgeChangeText(change) }));
  if (!c.judge_changes.length) {
    box.append(h("p", { class: "judges-same", text: "The records of both versions name the same judges in every judging role." }));
  }
  const st = h("span", { class: "status pending", "data-status": "pending", text: "checking…" });
  box.append(h("p", { class: "muted judges-source" },
    `Computed by the server (not signed) from the ${c.records.length} records the statement names; ` +
    "recomputed here from those records once they verify: ", st));
  vstate.judges.push({ c, st });
  return box;
}

// Per judging role, the judges `preds` (probe record predicates) name, as
// clients.probe.continuity._judges_by_role: a record lists its refusal judge first, then its
// transfer judge, then its verdict judges (named by the judge's name); a record naming none
// counts as "not named" for refusal and transfer. Map role -> Set of "name version (digest12)".
function judgesByRole(preds) {
  const roles = new Map();
  const add = (role, judge) => roles.set(role, (roles.get(role) ?? new Set()).add(judge));
  for (const p of preds) {
    const judges = p.judges ?? [];
    if (!judges.length) {
      add("refusal", "not named");
      add("transfer", "not named");
    }
    judges.forEach((j, k) => add(k < 2 ? ["refusal", "transfer"][k] : j.name,
      `${j.name} ${j.version} (${String(j.configDigest).slice(0, 12)})`));
  }
  return roles;
}

// clients.probe.continuity.judge_changes: one line per role both sides have whose judges differ.
function judgeChanges(before, after) {
  const a = judgesByRole(before), b = judgesByRole(after);
  const names = (set) => [...set].sort();
  return [...a.keys()].filter((role) => b.has(role)).sort()
    .filter((role) => JSON.stringify(names(a.get(role))) !== JSON.stringify(names(b.get(role))))
    .map((role) => `${role} judged by ${names(a.get(role)).join(", ")} before, ${names(b.get(role)).join(", ")} after`);
}

// Recompute each succession's judge changes from the records its verified statement names
// (predecessor's, successor's), each of which must itself have verified; the server's lines
// must be these, in order.
function checkJudgeChanges(vstate, results) {
  for (const { c, st } of vstate.judges) {
    try {
      const res = results.get(c.index);
      if (!res || res.status === "failed") throw new VerificationError("the continuity statement did not verify");
      const side = (refs) => (refs ?? []).map((r) => {
        const got = results.get(r.index);
        if (!got || got.status === "failed" || !got.statement) throw new VerificationError(`record ${r.index} did not verify`);
        return got.statement.predicate;
      });
      const p = res.statement.predicate;
      const before = side(p.predecessorRecords), after = side(p.successorRecords);
      const want = judgeChanges(before, after);
      if (JSON.stringify(want) !== JSON.stringify(c.judge_changes)) {
        const say = (lines) => (lines.length ? lines.join("; ") : "no judge change");
        throw new VerificationError(`the server says ${say(c.judge_changes)}, the verified records give ${say(want)}`);
      }
      const n = before.length + after.length;
      setStatus(st, res.status, `the same from the ${n} ${res.status} records`);
    } catch (e) {
      setStatus(st, "failed", `NOT verified: ${e.message}`);
    }
  }
}

// Beside a succession: the noise floor of each version as `bledger history` prints it (its two
// runs, refusal flips and |transfer change| with their upper bounds, or "not measured — one run
// of these weights"), and which entries the server computed it and the per-cell verdicts from.
function noiseBox(c, vstate) {
  const box = h("div", { class: "noise" }, h("h4", { text: "Noise floor" }));
  for (const line of c.noise_floor ?? []) box.append(h("p", { class: "noise-line", text: line }));
  const from = [...(c.noise?.records ?? []), ...c.records];
  const st = h("span", { class: "status pending", "data-status": "pending", text: "checking…" });
  if (c.noise) {
    box.append(h("p", { class: "muted noise-source" },
      `Computed by the server (not signed): the diff from the ${c.records.length} records the statement names, ` +
      `the floors from ${c.noise.records.length ? `entries ${c.noise.records.map((i) => `#${i}`).join(", ")}` : "no second run"}` +
      (c.noise.note ? ` (${c.noise.note})` : "") + ". Those entries: ", st));
    vstate.noise.push({ records: from, st });
  }
  return box;
}

function rowsTable(history, vstate) {
  const sec = h("section", { id: "rows" }, h("h2", { text: "Numbers" }));
  // The same columns and cells as `bledger history`: the figures are the strings the server
  // formatted once for both (value [95 % interval] n=N, or "insufficient data (n=N)").
  // The seed's headline pair leads: optimised transfer with its budget, paired benign refusal.
  const heads = ["version", "category", "tier", "optimised transfer [95% CI] (budget)",
    "paired benign refusal [95% CI]", "items", "benign refusal [95% CI]", "direct transfer [95% CI]",
    "framed transfer [95% CI]", "differential (framed - direct) [95% CI]",
    "position held under pushback [95% CI]", "disclosure engaged [95% CI]", "records"];
  const t = h("table", {}, h("tr", {}, ...heads.map((x) => h("th", { text: x }))));
  for (const r of history.rows) {
    const d = r.display ?? {};
    const st = h("span", { class: "status pending", "data-status": "pending", text: "checking…" });
    vstate.rows.push({ r, st });
    const cells = [r.version, r.category, r.tier, d.optimised_transfer, d.paired_benign_refusal, r.items,
      d.benign_refusal, d.direct_transfer,
      d.framed_transfer, d.differential_transfer, d.position_held, d.disclosure_engaged].map((x) => x ?? "-");
    t.append(h("tr", { "data-version": r.version, "data-category": r.category, "data-tier": r.tier },
      ...cells.map((x) => h("td", { class: "figure", text: String(x) })),
      h("td", {}, st)));
  }
  sec.append(t);
  return sec;
}

function recordsTable(indices, claimMap, vstate) {
  const sec = h("section", { id: "records" }, h("h2", { text: "Records and their inclusion proofs" }));
  const summary = h("p", { id: "records-summary", text: `checking ${indices.length} records…` });
  sec.append(summary);
  vstate.summary = summary;
  const t = h("table", {}, h("tr", {}, ...["index", "what", "status", "entry and proof"].map((x) => h("th", { text: x }))));
  for (const i of indices) {
    const what = describe(claimMap.get(i));
    const st = h("span", { class: "status pending", "data-status": "pending", text: "checking…" });
    const details = h("details", {}, h("summary", { text: "show" }));
    vstate.records.set(i, { st, details });
    t.append(h("tr", { "data-index": i }, h("td", { text: String(i) }), h("td", { text: what }), h("td", {}, st), h("td", {}, details)));
  }
  sec.append(t);
  return sec;
}

function shortStatement(st) {
  return JSON.stringify(st, (k, v) => (typeof v === "string" && v.length > 160 ? `${v.slice(0, 160)}… (${v.length} characters)` : v), 2);
}

function fillDetails(details, res, ck) {
  const lines = [];
  if (res.leafHash) lines.push(`leaf hash (computed)  ${hex(res.leafHash)}`);
  if (res.proof) res.proof.forEach((p, k) => lines.push(`proof[${k}]              ${hex(p)}`));
  if (res.root) lines.push(`root (computed)        ${hex(res.root)}`);
  if (ck.cp) lines.push(`root (checkpoint)      ${hex(ck.cp.root)}  size ${ck.cp.size}`);
  details.append(h("p", { class: res.status, text: res.text }), h("pre", { class: "mono", text: lines.join("\n") }));
  if (res.statement) details.append(h("pre", { class: "statement", text: shortStatement(res.statement) }));
}

// -- imported eval samples (bledger import inspect) --------------------------------------------

// What the history says each eval sample's entry holds: [index, claim] for every sample of every
// group, the claim naming the task, model version, config digest, sample, epoch and the scorer's
// value (canonical JSON text, as signed). Checking these is checking the inputs of each figure.
function evalClaims(history) {
  const out = [];
  for (const g of history.evalGroups ?? []) {
    for (const x of g.samples) {
      out.push([x.index, { kind: "eval", task: g.task, taskVersion: g.taskVersion, version: g.modelVersion,
        config: g.configSha256, scorer: g.scorer, sample: x.sample, epoch: x.epoch, value: x.value }]);
    }
  }
  return out;
}

function checkEvalClaim(st, claim, model, want) {
  const p = st.predicate ?? {};
  want(st.predicateType === EVAL_SAMPLE, "an imported eval sample");
  want(p.model?.name === model && p.model?.version === claim.version, `a sample of ${model} ${claim.version}`);
  want(p.task === claim.task && p.taskVersion === claim.taskVersion, `a sample of task ${claim.task}@${claim.taskVersion}`);
  want(p.configSha256 === claim.config, `a sample run with config ${claim.config.slice(0, 16)}…`);
  want(p.sampleId === claim.sample && p.epoch === claim.epoch, `sample ${claim.sample} epoch ${claim.epoch}`);
  const score = (p.scores ?? []).find((x) => x.scorer === claim.scorer);
  want(score && score.value === claim.value, `a ${claim.scorer} score of ${claim.value}`);
}

// Beside the probe numbers: per (task, model version, scorer, config) the n, the server's summary
// (a rate or mean with its 95 % interval, "insufficient data (n=…)" under the page's rule, or the
// categorical counts), the config digest and each sample's log index.
function evalSection(history, vstate) {
  vstate.evals = [];
  const groups = history.evalGroups ?? [];
  const sec = h("section", { id: "evals" }, h("h2", { text: "Imported eval samples" }));
  if (!groups.length) {
    sec.append(h("p", { class: "muted", text: "No imported eval samples for this model." }));
    return sec;
  }
  sec.append(h("p", { class: "muted", text: "Samples of evaluations run by another harness and imported " +
    "with bledger import inspect: they prove who imported what the harness's log says, not that this model produced the answers." }));
  const heads = ["task", "version", "scorer", "n", "score [95% CI]", "method", "config sha256", "records", "status"];
  const t = h("table", {}, h("tr", {}, ...heads.map((x) => h("th", { text: x }))));
  for (const g of groups) {
    const st = h("span", { class: "status pending", "data-status": "pending", text: "checking…" });
    vstate.evals.push({ g, st });
    const links = h("span", { class: "mono" });
    g.samples.forEach((x, k) => {
      if (k) links.append(" ");
      // The entry itself, from the log's public API (its proof is checked in the records table).
      links.append(h("a", { href: logURL(history.log.name, `entries/${x.index}`), "data-index": x.index,
        title: `sample ${x.sample} epoch ${x.epoch}: ${x.value}`, text: `#${x.index}` }));
    });
    t.append(h("tr", { "data-task": g.task, "data-scorer": g.scorer, "data-config": g.configSha256 },
      h("td", { text: `${g.task}@${g.taskVersion}` }), h("td", { text: g.modelVersion }),
      h("td", { text: g.scorer }), h("td", { class: "n", text: String(g.n) }),
      h("td", { class: "figure", text: g.summary.display }),
      h("td", { class: "muted", text: g.summary.kind === "categorical" ? "counts" : `${g.summary.kind}, ${g.summary.method}` }),
      h("td", { class: "mono config", title: g.generateConfig, text: g.configSha256 }),
      h("td", { class: "links" }, links), h("td", {}, st)));
  }
  sec.append(t);
  return sec;
}

function markEvalGroups(vstate, results) {
  for (const { g, st } of vstate.evals ?? []) {
    const bad = g.records.filter((i) => results.get(i)?.status !== "verified" && results.get(i)?.status !== "included");
    const first = results.get(g.records[0]);
    if (bad.length) setStatus(st, "failed", `NOT verified: ${bad.length} of ${g.records.length} samples`);
    else setStatus(st, first.status, `${g.records.length} sample${g.records.length === 1 ? "" : "s"} ${first.text}`);
  }
}

// -- views ------------------------------------------------------------------------------------

const main = () => document.getElementById("main");
// A verifier key has no spaces, so a "+" that a pasted URL turned into a space is put back.
// Spaces are put back before trimming: a key whose base64 ends in "+" must keep it.
const pinnedKey = () => new URLSearchParams(location.search).get("vkey")?.replaceAll(" ", "+").trim() || null;

async function showModels() {
  const m = await getJSON("api/models");
  const box = h("section", { id: "models" }, h("h2", { text: `Models in ${m.log.name}` }),
    h("p", { class: "muted", text: `log ${m.log.origin}, ${m.log.size} entries` }));
  const list = h("ul", {});
  for (const x of m.models) {
    list.append(h("li", { "data-model": x.model },
      h("a", { href: `#/model/${encodeURIComponent(x.model)}`, text: x.model }),
      h("span", { class: "muted", text: `  ${x.versions.join(", ")}` })));
  }
  if (!m.models.length) box.append(h("p", { text: "No probe records in this log yet." }));
  box.append(list);
  main().replaceChildren(box);
}

async function showModel(model) {
  main().replaceChildren(h("p", { text: `loading ${model}…` }));
  const history = await getJSON(`api/history/${encodeURIComponent(model)}`);
  const logName = history.log.name;
  const ck = await checkCheckpoint(logName, pinnedKey());
  const vstate = { rows: [], continuity: [], records: new Map(), verdicts: [], noise: [], judges: [] };
  const claimMap = claims(history);
  const indices = [...claimMap.keys()].sort((a, b) => a - b);
  const head = h("section", { id: "model" }, h("h2", { text: model }),
    h("p", { class: "muted" }, h("a", { href: "#", text: "← all models" }),
      ` · versions ${history.versions.map((v) => v.version).join(", ")}`));
  for (const v of history.versions) {
    head.append(h("p", { class: "mono", text: `${v.version}  weights sha256 ${v.weights_sha256}  ${v.records.length} records` }));
  }
  for (const f of history.flags) head.append(h("p", { class: "flag", text: `⚠ ${f}` }));
  main().replaceChildren(head, trustPanel(ck), chartsFor(history, vstate), continuitySection(history, vstate),
    rowsTable(history, vstate), evalSection(history, vstate), recordsTable(indices, claimMap, vstate));

  const results = new Map();
  await pool(indices, CONCURRENCY, async (i) => {
    const res = await checkRecord(logName, ck, i, claimMap.get(i), model);
    results.set(i, res);
    const { st, details } = vstate.records.get(i);
    setStatus(st, res.status, res.text);
    fillDetails(details, res, ck);
  });
  const good = indices.filter((i) => results.get(i).status !== "failed").length;
  vstate.summary.textContent = `${good} of ${indices.length} records checked against the checkpoint` +
    (good === indices.length ? "" : `; ${indices.length - good} NOT verified`);
  vstate.summary.dataset.done = "true";
  for (const { r, st } of vstate.rows) {
    const bad = r.records.filter((i) => results.get(i).status === "failed").length;
    if (bad) setStatus(st, "failed", `NOT verified: ${bad} of ${r.records.length} records`);
    else {
      const first = results.get(r.records[0]);
      const n = r.records.length;
      setStatus(st, first?.status ?? "failed", `${n} record${n === 1 ? "" : "s"} ${first?.text ?? ""}`);
    }
  }
  for (const { c, st, refs } of vstate.continuity) {
    const res = results.get(c.index);
    setStatus(st, res.status, res.text);
    const ref = checkReferences(c, results, ck.cp?.origin);
    refs.textContent = ref.text;
    refs.className = ref.ok ? "refs" : "refs failed";
    refs.dataset.ok = String(ref.ok);
  }
  markEvalGroups(vstate, results);
  for (const { records, st } of vstate.noise) {
    const bad = records.filter((i) => results.get(i)?.status !== "verified" && results.get(i)?.status !== "included");
    const first = results.get(records[0]);
    if (bad.length || !first) setStatus(st, "failed", `NOT verified: ${bad.length} of ${records.length} records`);
    else setStatus(st, first.status, `${records.length} records ${first.status}`);
  }
  checkJudgeChanges(vstate, results);
  await checkVerdicts(vstate, results);
  document.body.dataset.checked = "true";
}

async function route() {
  document.body.dataset.checked = "false";
  try {
    if (!window.isSecureContext || !crypto.subtle) {
      throw new Error("WebCrypto is unavailable: open this page over HTTPS (or on localhost) to check proofs");
    }
    const m = /^#\/model\/(.+)$/.exec(location.hash);
    if (m) await showModel(decodeURIComponent(m[1]));
    else await showModels();
  } catch (e) {
    main().replaceChildren(h("p", { class: "failed", id: "error", text: `error: ${e.message}` }));
    document.body.dataset.checked = "error";
  }
}

window.bledger = {
  VerificationError, b64decode, hex, leafHash, nodeHash, rootFromInclusionProof, verifyInclusion,
  parseVerifierKey, parseNote, parseCheckpoint, verifyNoteSignature, judgeChanges,
};
window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", route);
