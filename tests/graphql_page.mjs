// Drives a headless Chromium (already running with --remote-debugging-port) through the
// DevTools protocol with Node 22's own WebSocket: opens the query page (Ruru) at a URL, types
// nothing but puts a query in the editor's storage, runs it with the page's own button and
// reports what the page shows, every URL the page requested, and a screenshot.
//   node graphql_page.mjs <debug port> <page url> <query> <screenshot.png>
// Prints one JSON object: {result, requests, console}.
import { writeFileSync, writeSync } from "node:fs";

const [port, url, query, screenshot] = process.argv.slice(2);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
const page = targets.find((t) => t.type === "page");
const socket = new WebSocket(page.webSocketDebuggerUrl);
await new Promise((resolve, reject) => {
  socket.onopen = resolve;
  socket.onerror = reject;
});

let next = 0;
const pending = new Map();
const requests = [];
const consoleLines = [];
socket.onmessage = (message) => {
  const data = JSON.parse(message.data);
  if (data.id !== undefined && pending.has(data.id)) {
    pending.get(data.id)(data);
    pending.delete(data.id);
  } else if (data.method === "Network.requestWillBeSent") {
    requests.push(data.params.request.url);
  } else if (data.method === "Runtime.consoleAPICalled" || data.method === "Runtime.exceptionThrown") {
    consoleLines.push(JSON.stringify(data.params).slice(0, 500));
  }
};
function send(method, params = {}) {
  const id = ++next;
  socket.send(JSON.stringify({ id, method, params }));
  return new Promise((resolve) => pending.set(id, resolve));
}
async function evaluate(expression) {
  const reply = await send("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true });
  return reply.result?.result?.value;
}
async function until(expression, ms = 20000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await evaluate(expression)) return true;
    await sleep(200);
  }
  return false;
}

await send("Network.enable");
await send("Runtime.enable");
await send("Page.enable");
await send("Emulation.setDeviceMetricsOverride", { width: 1280, height: 900, deviceScaleFactor: 1, mobile: false });
await send("Page.navigate", { url });
await until("document.readyState === 'complete'");
// GraphiQL starts its editor from its storage ("graphiql:query") when no tab state exists.
await evaluate(`localStorage.clear(); localStorage.setItem("graphiql:query", ${JSON.stringify(query)}); true`);
await send("Page.reload");
await sleep(500);
await until("!!document.querySelector('.graphiql-execute-button')");
await sleep(1000);
await evaluate("document.querySelector('.graphiql-execute-button').click(); true");
await until("(document.querySelector('.graphiql-response')?.innerText ?? '').includes('data')");
await sleep(500);
const result = await evaluate("document.querySelector('.graphiql-response')?.innerText ?? ''");
const shot = await send("Page.captureScreenshot", { format: "png" });
writeFileSync(screenshot, Buffer.from(shot.result.data, "base64"));
// Synchronously: process.exit would cut a pipe's pending output short.
writeSync(1, JSON.stringify({ result, requests: requests.map((u) => u.slice(0, 300)), console: consoleLines }) + "\n");
socket.close();
process.exit(0);
