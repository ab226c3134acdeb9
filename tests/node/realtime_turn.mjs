// One text turn through the `openai` npm package's Realtime WebSocket client, unmodified: the client only gets a
// base URL and a key. The package insists on wss:// ("Realtime WebSocket URLs must use the wss: protocol"), and
// Node trusts koe's local CA through NODE_EXTRA_CA_CERTS. Prints one JSON line: what came back, for the test to check.
//
//   KOE_BASE_URL=https://127.0.0.1:8000 KOE_API_KEY=… NODE_EXTRA_CA_CERTS=ca.pem node realtime_turn.mjs
import OpenAI from "openai";
import { OpenAIRealtimeWS } from "openai/realtime/ws";

const TIMEOUT_MS = 60000;
const client = new OpenAI({ apiKey: process.env.KOE_API_KEY, baseURL: `${process.env.KOE_BASE_URL}/v1` });
const rt = new OpenAIRealtimeWS({ model: "gpt-realtime" }, client);
const seen = [];
let text = "";
const timer = setTimeout(() => finish(1, { error: "timed out", seen }), TIMEOUT_MS);

function finish(code, result) {
  clearTimeout(timer);
  console.log(JSON.stringify({ url: rt.url.toString(), ...result }));
  rt.close();
  process.exitCode = code;
}

rt.on("error", (err) => finish(1, { error: String(err.message || err), seen }));
rt.on("event", (event) => seen.push(event.type));
rt.on("session.created", () => {
  rt.send({ type: "session.update", session: { type: "realtime", output_modalities: ["text"] } });
  rt.send({
    type: "conversation.item.create",
    item: { type: "message", role: "user", content: [{ type: "input_text", text: "What is the capital of France?" }] },
  });
  rt.send({ type: "response.create" });
});
rt.on("response.output_text.delta", (event) => {
  text += event.delta;
});
rt.on("response.done", (event) => finish(0, { status: event.response.status, text, seen }));
