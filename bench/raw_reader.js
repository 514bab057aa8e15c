// The cheapest reader of a socket.io 4 stream there is, for measuring what a source can emit
// (bench/ingest.py --source node): a raw WebSocket speaking just enough Engine.IO 4 and
// socket.io 5 to connect, subscribe and answer pings, counting event packets unparsed.
//
// Usage: SOCKETIO_MODULES=/path/to/node_modules node raw_reader.js URL CHANNEL...
// Prints {"ready": true} once it has asked for every channel; then, for each line read
// on stdin, {"events": n} (event packets received so far). Ends when stdin closes.
"use strict";

const path = require("path");

const WebSocket = require(path.join(process.env.SOCKETIO_MODULES, "ws"));
const [url, ...channels] = process.argv.slice(2);
const ws = new WebSocket(
  `${url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`,
  { perMessageDeflate: false },
);

const OPEN = 0x30; // "0": Engine.IO open
const PING = 0x32; // "2"
const MESSAGE = 0x34; // "4"
const CONNECT = 0x30; // socket.io "0" after "4": namespace connected
const EVENT = 0x32; // socket.io "2" after "4"
let events = 0;

ws.on("message", (data) => {
  const type = data[0];
  if (type === MESSAGE && data[1] === EVENT) {
    events += 1;
  } else if (type === PING && data.length === 1) {
    ws.send("3");
  } else if (type === OPEN) {
    ws.send("40");
  } else if (type === MESSAGE && data[1] === CONNECT) {
    for (const channel of channels) ws.send(`42${JSON.stringify(["subscribe", channel])}`);
    process.stdout.write(JSON.stringify({ ready: true }) + "\n");
  }
});
ws.on("error", (err) => {
  console.error(String(err));
  process.exit(1);
});

let input = "";
process.stdin.on("data", (chunk) => {
  input += chunk;
  while (input.includes("\n")) {
    input = input.slice(input.indexOf("\n") + 1);
    process.stdout.write(JSON.stringify({ events }) + "\n");
  }
});
process.stdin.on("end", () => process.exit(0));
