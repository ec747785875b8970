// Issue 18's anchor: aws-jwt-verify, timed on the very tokens bench/run.py times siot_authz on.
//
// Reads one JSON document on stdin: {"jwks", "userPoolId", "clientId", "tokens", "windows", "windowTokens"}.
// Prints one JSON line: the shortest window per token, in microseconds, of
//   "bare":   node's own RS256 check of each token's signature (the floor node offers), and
//   "anchor": CognitoJwtVerifier.verifySync, keys cached, every token new to it
//             (aws-jwt-verify keeps no cache of verified tokens, so every call is a cold one).
// The two are taken in turn, window by window, like bench/run.py's own windows, so a
// burst from a neighbour falls on both, and the shortest window is what the code costs.
import { createPublicKey, verify } from "node:crypto";
import { CognitoJwtVerifier } from "aws-jwt-verify";

const input = JSON.parse(await new Response(process.stdin).text());
const { jwks, userPoolId, clientId, tokens, windows, windowTokens } = input;

const verifier = CognitoJwtVerifier.create({ userPoolId, clientId, tokenUse: "id" });
verifier.cacheJwks(jwks);
const key = createPublicKey({ key: jwks.keys[0], format: "jwk" });

function bare(token) {
  const end = token.lastIndexOf(".");
  const ok = verify(
    "RSA-SHA256",
    Buffer.from(token.slice(0, end)),
    key,
    Buffer.from(token.slice(end + 1), "base64url"),
  );
  if (!ok) throw new Error("bare RS256 refused a bench token");
}

function anchor(token) {
  verifier.verifySync(token);
}

const variants = { bare, anchor };
// V8 compiles hot functions only after they have run a while: warm both up first, so the
// windows time the compiled code a long-running service runs, not the interpreter.
for (let i = 0; i < Math.max(4000, tokens.length); i++) {
  bare(tokens[i % tokens.length]);
  anchor(tokens[i % tokens.length]);
}
const shortest = { bare: Infinity, anchor: Infinity };
// Each window takes the next tokens of the pool, so no token repeats within a window.
let offset = 0;
for (let round = 0; round < windows; round++) {
  const batch = [];
  for (let i = 0; i < windowTokens; i++) batch.push(tokens[(offset + i) % tokens.length]);
  offset += windowTokens;
  const order = round % 2 ? ["anchor", "bare"] : ["bare", "anchor"];
  for (const name of order) {
    const run = variants[name];
    const start = process.hrtime.bigint();
    for (const token of batch) run(token);
    const micros = Number(process.hrtime.bigint() - start) / 1000 / batch.length;
    if (micros < shortest[name]) shortest[name] = micros;
  }
}
console.log(JSON.stringify({ node: process.version, ...shortest }));
