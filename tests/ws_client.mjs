// A browser-like WebSocket client for tests: node's built-in WebSocket (undici), which,
// like a browser, cannot set headers and sends its token as a subprotocol offer.
//
//   node --experimental-websocket tests/ws_client.mjs URL '["bearer", "<token>"]' ['{"timeoutMs": 5000}']
//
// Opens URL offering the given subprotocols, sends "ping", waits for the server's
// messages until it closes (or timeoutMs pass, 5 s by default), and prints one JSON line:
// {"opened", "protocol", "messages", "closeCode", "closeReason", "openedAt", "closedAt", "error"}
// (times in Unix milliseconds). With an "opened" option it also prints "opened" on its own
// line as soon as the socket opens, so a test can act on an open socket.

const [url, offered = "[]", rawOptions = "{}"] = process.argv.slice(2);
const options = { timeoutMs: 5000, announceOpen: false, ...JSON.parse(rawOptions) };
const result = {
  opened: false,
  protocol: null,
  messages: [],
  closeCode: null,
  closeReason: null,
  openedAt: null,
  closedAt: null,
  error: null,
};

function finish() {
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(0);
}

const timer = setTimeout(() => {
  result.error = "timeout";
  finish();
}, options.timeoutMs);

let socket;
try {
  socket = new WebSocket(url, JSON.parse(offered));
} catch (error) {
  result.error = String(error && error.name);
  clearTimeout(timer);
  finish();
}

socket.addEventListener("open", () => {
  result.opened = true;
  result.openedAt = Date.now();
  result.protocol = socket.protocol;
  if (options.announceOpen) process.stdout.write("opened\n");
  socket.send("ping");
});
socket.addEventListener("message", (event) => {
  result.messages.push(String(event.data));
});
socket.addEventListener("error", () => {
  // A browser says nothing more about a refused handshake; neither do we. A browser
  // then fires close (1006); node 20's undici never does, so give it a moment only.
  result.error = result.error || "error";
  if (!result.opened) setTimeout(finish, 200);
});
socket.addEventListener("close", (event) => {
  result.closeCode = event.code;
  result.closeReason = event.reason;
  result.closedAt = Date.now();
  clearTimeout(timer);
  finish();
});
