// A real Node socket.io server (whichever major version SOCKETIO_MODULES holds) for the
// recorder's stream tests, playing the exchange's socket.io side as the docs describe it:
// a client emits `subscribe` with a channel name (`book_BTC_USD`) and then receives that
// channel's events. The test drives it over HTTP on the same port (/admin/...).
//
// Usage: SOCKETIO_MODULES=/path/to/node_modules node server.js '{"pingInterval": 200}'
// Prints one JSON line {"port": N, "version": "2.5.1"} once it listens (port chosen by the
// OS), then serves until stdin closes or it is killed.
//
// Options (JSON, all optional): port (0: the OS picks), pingInterval, pingTimeout (ms),
// transports (["websocket"] to refuse long-polling), allowEIO3 (socket.io 4 only), cors
// (true: allow any origin), path ("/socket.io"), subscribeEvent ("subscribe"), upstream
// (a socket.io 3+/4 URL whose channels this server relays; see relayChannel below).
//
// Admin routes (JSON bodies):
//   POST /admin/emit        {"room", "event", "payloads": [JSON text, ...]}: each text is
//                           parsed (JSON.parse: numbers become doubles, as in any Node
//                           server) and emitted to the room; answers {"receivers": n}
//   POST /admin/send-raw    {"packets": [text, ...]}: each text as one Engine.IO message
//                           (a socket.io packet such as 2["book_X",{...}]) to every socket
//   POST /admin/disconnect  every socket disconnected by the server; answers {"sockets": n}
//   GET  /admin/state       version, connections so far, sockets (id, rooms, heartbeats,
//                           Engine.IO protocol), subscriptions in arrival order
"use strict";

const http = require("http");
const path = require("path");

const modules = process.env.SOCKETIO_MODULES;
if (!modules) {
  console.error("SOCKETIO_MODULES must name a node_modules directory holding socket.io");
  process.exit(2);
}
const socketio = require(path.join(modules, "socket.io"));
const version = require(path.join(modules, "socket.io", "package.json")).version;
const major = parseInt(version, 10);
const options = JSON.parse(process.argv[2] || "{}");
const subscribeEvent = options.subscribeEvent || "subscribe";

const serverOptions = { path: options.path || "/socket.io" };
for (const key of ["pingInterval", "pingTimeout", "transports", "allowEIO3"]) {
  if (options[key] !== undefined) serverOptions[key] = options[key];
}
if (options.cors) serverOptions.cors = { origin: "*" };

const state = { connections: 0, subscriptions: [], heartbeats: {}, relayed: 0 };

const httpServer = http.createServer((req, res) => {
  const answer = (status, body) => {
    res.writeHead(status, { "Content-Type": "application/json" });
    res.end(JSON.stringify(body));
  };
  let text = "";
  req.on("data", (chunk) => (text += chunk));
  req.on("end", () => {
    try {
      const body = text ? JSON.parse(text) : {};
      const route = `${req.method} ${req.url}`;
      if (route === "POST /admin/emit") return answer(200, emit(body));
      if (route === "POST /admin/send-raw") return answer(200, sendRaw(body));
      if (route === "POST /admin/disconnect") return answer(200, disconnectAll());
      if (route === "GET /admin/state") return answer(200, describe());
      return answer(404, { error: `no route ${route}` });
    } catch (err) {
      return answer(500, { error: String(err && err.stack ? err.stack : err) });
    }
  });
});

const io = major >= 3 ? new socketio.Server(httpServer, serverOptions) : socketio(httpServer, serverOptions);

// socket.io 2 keeps sockets in an object, 3+ in a Map.
function sockets() {
  const all = io.of("/").sockets;
  return all instanceof Map ? Array.from(all.values()) : Object.values(all);
}

function roomsOf(socket) {
  const rooms = socket.rooms;
  return rooms instanceof Set ? Array.from(rooms) : Object.keys(rooms);
}

function receivers(room) {
  return sockets().filter((socket) => roomsOf(socket).includes(room)).length;
}

io.on("connection", (socket) => {
  state.connections += 1;
  state.heartbeats[socket.id] = 0;
  // Engine.IO counts a heartbeat when the client's ping (v3) or pong (v4) arrives: in the
  // direction the server's protocol expects, so a client that gets it wrong counts none.
  socket.conn.on("heartbeat", () => (state.heartbeats[socket.id] += 1));
  socket.on(subscribeEvent, (channel) => {
    state.subscriptions.push([socket.id, String(channel)]);
    socket.join(String(channel));
    relayChannel(String(channel));
  });
});

// With {"upstream": URL}: a relay. A socket.io-client 4 connection to the upstream exchange
// (the recorder's simulator) subscribes every channel a client of ours subscribed, and each
// upstream event is emitted again here, into the room of its name, to our clients: the
// simulator's exchange, served by a Node socket.io server of this generation.
const upstreamChannels = new Set();
let upstream = null;
if (options.upstream) {
  const { io: connect } = require(path.join(modules, "socket.io-client"));
  upstream = connect(options.upstream, { transports: ["websocket"], reconnectionDelay: 100 });
  upstream.on("connect", () => {
    for (const channel of upstreamChannels) upstream.emit(subscribeEvent, channel);
  });
  upstream.onAny((event, ...args) => {
    state.relayed += 1;
    io.to(event).emit(event, ...args);
  });
}

function relayChannel(channel) {
  if (!upstream || upstreamChannels.has(channel)) return;
  upstreamChannels.add(channel);
  if (upstream.connected) upstream.emit(subscribeEvent, channel);
}

function emit(body) {
  for (const text of body.payloads) io.to(body.room).emit(body.event, JSON.parse(text));
  return { receivers: receivers(body.room) };
}

function sendRaw(body) {
  const all = sockets();
  for (const socket of all) for (const text of body.packets) socket.conn.write(text);
  return { sockets: all.length };
}

function disconnectAll() {
  const all = sockets();
  for (const socket of all) socket.disconnect(true);
  return { sockets: all.length };
}

function describe() {
  return {
    version,
    connections: state.connections,
    sockets: sockets().map((socket) => ({
      id: socket.id,
      engine_id: socket.conn.id,
      engine_protocol: socket.conn.protocol || 3,
      transport: socket.conn.transport.name,
      rooms: roomsOf(socket),
      heartbeats: state.heartbeats[socket.id],
    })),
    subscriptions: state.subscriptions,
    relayed: state.relayed,
    upstream_connected: Boolean(upstream && upstream.connected),
  };
}

httpServer.listen(options.port || 0, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: httpServer.address().port, version }) + "\n");
});
// The test harness closes stdin when it is done: end with it, even if it was SIGKILLed.
process.stdin.resume();
process.stdin.on("end", () => process.exit(0));
