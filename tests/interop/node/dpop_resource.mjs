// Interop: oauth4webapi (an npm client no one here wrote) as a DPoP client of a resource server
// built on grantd.sdk. Run by tests/test_sdk_dpop.py.
//
// It makes an ES256 key pair and prints {"jkt": <its RFC 7638 thumbprint, by jose>}; the Python side
// mints an access token bound to that key and writes {"token", "url"} on stdin. Then it calls the
// URL with oauth4webapi's protectedResourceRequest and DPoP handle: when the resource answers
// use_dpop_nonce, the library keeps the DPoP-Nonce it got and the request is tried again, as
// RFC 9449 §9 expects of a client. It prints the last JSON line: what each try got, the challenges
// oauth4webapi parsed from WWW-Authenticate, and the final answer.

import * as oauth from 'oauth4webapi';
import * as jose from 'jose';
import { createInterface } from 'node:readline';

const keyPair = await oauth.generateKeyPair('ES256');
const jwk = await jose.exportJWK(keyPair.publicKey);
console.log(JSON.stringify({ jkt: await jose.calculateJwkThumbprint(jwk, 'sha256') }));

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const { token, url } = JSON.parse((await lines.next()).value);

const DPoP = oauth.DPoP({}, keyPair);
const tries = [];
let final = null;
for (let attempt = 0; attempt < 3 && final === null; attempt++) {
  try {
    const response = await oauth.protectedResourceRequest(token, 'GET', new URL(url), new Headers(), null, {
      DPoP,
      [oauth.allowInsecureRequests]: true,
    });
    final = { status: response.status, body: await response.json() };
    tries.push({ status: response.status });
  } catch (err) {
    tries.push({
      status: err.status ?? null,
      nonce_error: oauth.isDPoPNonceError(err),
      challenges: (err.cause ?? []).map((c) => ({ scheme: c.scheme, parameters: c.parameters })),
    });
    if (!oauth.isDPoPNonceError(err)) break;
  }
}
console.log(JSON.stringify({ tries, final }));
process.exit(0);
