// A fast book-event source for bench/ingest.py (--source node): a Node socket.io 4 server
// that sends the book events the simulator made ahead (`recorder sim`'s POST /admin/ahead)
// as fast as its subscribers take them, or at a steady rate. The simulator stays the
// exchange (REST, the engine's book and tape); this server only sends, because the
// simulator's own python-socketio side is slower than a bare client (docs/benchmarks.md).
//
// Usage: SOCKETIO_MODULES=/path/to/node_modules node node_source.js
// Prints one JSON line {"port": N, "version": "4.8.4"} once it listens (port chosen by the
// OS), then serves until stdin closes.
//
// Clients connect as to the simulator: emit `subscribe` with a channel (`book_BTC_USD`),
// acknowledged {"success": true, "channel": ...} when the client asks for an ack.
//
// Each event is written as the simulator's packet text, unparsed, with socket.conn.write
// (an Engine.IO message): JSON.parse would turn every number into a double.
//
// Flow control: the source stops while any subscriber of the next event's channel has
// HIGH_WATER packets waiting in its Engine.IO write buffer, and goes on when that buffer
// drains (handed to the WebSocket), so a slow client slows the source instead of growing
// its memory; what each client took is measured at the client.
//
// Admin routes (JSON bodies):
//   POST /admin/load   {"url", "body"}: POST `body` to `url` (the simulator's /admin/ahead),
//                      keep each answered line (room, space, packet) in order, replacing
//                      what was loaded; answers {"events": n}
//   POST /admin/start  {"start_ms", "rate_per_s"} (both optional: paced, event k not
//                      before start_ms + k * 1000 / rate_per_s; else flat out),
//                      "repeat" (true: cycle the events until /admin/stop, for measuring
//                      the source itself; no recording can be checked then)
//   POST /admin/stop   stop sending
//   GET  /admin/state  loaded, sent (events handed to every subscriber), done, running,
//                      late_ms (how far the paced source fell behind its schedule at most),
//                      max_queued (the most packets one client had waiting), sockets
//                      (id, rooms, queued), subscriptions (socket id, channel)
"use strict";

const http = require("http");
const path = require("path");

const HIGH_WATER = 1000;
const BATCH = 2000; // events sent between two turns of the event loop

const modules = process.env.SOCKETIO_MODULES;
if (!modules) {
  console.error("SOCKETIO_MODULES must name a node_modules directory holding socket.io 4");
  process.exit(2);
}
const { Server } = require(path.join(modules, "socket.io"));
const version = require(path.join(modules, "socket.io", "package.json")).version;

const httpServer = http.createServer((req, res) => {
  const answer = (status, body) => {
    res.writeHead(status, { "Content-Type": "application/json" });
    res.end(JSON.stringify(body));
  };
  let text = "";
  req.on("data", (chunk) => (text += chunk));
  req.on("end", async () => {
    try {
      const body = text ? JSON.parse(text) : {};
      const route = `${req.method} ${req.url}`;
      if (route === "POST /admin/load") return answer(200, await load(body));
      if (route === "POST /admin/start") return answer(200, start(body));
      if (route === "POST /admin/stop") return answer(200, stop());
      if (route === "GET /admin/state") return answer(200, describe());
      return answer(404, { error: `no route ${route}` });
    } catch (err) {
      return answer(500, { error: String(err && err.stack ? err.stack : err) });
    }
  });
});

const io = new Server(httpServer, { transports: ["websocket"] });
const members = new Map(); // room -> Set of sockets subscribed to it
const subscriptions = [];

io.on("connection", (socket) => {
  socket.on("subscribe", (channel, ack) => {
    const room = String(channel);
    subscriptions.push([socket.id, room]);
    if (!members.has(room)) members.set(room, new Set());
    members.get(room).add(socket);
    if (typeof ack === "function") ack({ success: true, channel: room });
  });
  socket.on("disconnect", () => {
    for (const set of members.values()) set.delete(socket);
    if (blockedOn === socket) resume();
  });
});

// --- the events and the sending ---------------------------------------------------------

let rooms = [];
let packets = [];
let next = 0; // index of the next event to send
let sent = 0; // events sent since the start (more than loaded when repeating)
let running = false;
let done = false;
let repeat = false;
let paced = null; // {startMs, rate}
let lateMs = 0;
let maxQueued = 0;
let blockedOn = null; // the socket whose write buffer the source waits on

async function load(body) {
  const response = await fetch(body.url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body.body),
  });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`${body.url}: ${response.status} ${text}`);
  rooms = [];
  packets = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const space = line.indexOf(" ");
    rooms.push(line.slice(0, space));
    packets.push(line.slice(space + 1));
  }
  next = sent = 0;
  done = false;
  return { events: packets.length };
}

function start(body) {
  if (!packets.length) throw new Error("nothing loaded");
  next = sent = 0;
  lateMs = maxQueued = 0;
  done = false;
  repeat = Boolean(body.repeat);
  paced = body.rate_per_s ? { startMs: body.start_ms || Date.now(), rate: body.rate_per_s } : null;
  running = true;
  setImmediate(pump);
  return describe();
}

function stop() {
  running = false;
  return describe();
}

function pump() {
  if (!running || blockedOn) return;
  let budget = BATCH;
  if (paced) {
    const now = Date.now();
    const due = paced.startMs + (sent * 1000) / paced.rate;
    if (now < due) {
      setTimeout(pump, Math.max(1, Math.ceil(due - now)));
      return;
    }
    lateMs = Math.max(lateMs, now - due);
    budget = Math.min(budget, Math.floor(((now - paced.startMs) * paced.rate) / 1000) + 1 - sent);
  }
  for (; budget > 0; budget--) {
    if (next >= packets.length) {
      if (!repeat) {
        running = false;
        done = true;
        return;
      }
      next = 0;
    }
    const targets = members.get(rooms[next]);
    if (targets) {
      for (const socket of targets) {
        const queued = socket.conn.writeBuffer.length;
        if (queued > maxQueued) maxQueued = queued;
        if (queued >= HIGH_WATER) return block(socket);
      }
      for (const socket of targets) socket.conn.write(packets[next]);
    }
    next++;
    sent++;
  }
  setImmediate(pump);
}

function block(socket) {
  blockedOn = socket;
  socket.conn.once("drain", resume);
}

function resume() {
  if (blockedOn) blockedOn.conn.off("drain", resume);
  blockedOn = null;
  setImmediate(pump);
}

function describe() {
  const sockets = Array.from(io.of("/").sockets.values());
  return {
    version,
    loaded: packets.length,
    sent,
    done,
    running,
    late_ms: lateMs,
    max_queued: maxQueued,
    sockets: sockets.map((socket) => ({
      id: socket.id,
      rooms: Array.from(socket.rooms),
      queued: socket.conn.writeBuffer.length,
    })),
    subscriptions,
  };
}

httpServer.listen(0, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: httpServer.address().port, version }) + "\n");
});
// bench/ingest.py closes stdin when it is done: end with it, even if it was SIGKILLed.
process.stdin.resume();
process.stdin.on("end", () => process.exit(0));
