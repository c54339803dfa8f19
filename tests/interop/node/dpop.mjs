// Interop: openid-client 6's DPoP (RFC 9449, getDPoPHandle) against a real `grantd serve`
// (tests/test_interop_dpop.py runs it). The library signs every proof with a key pair it
// generates here (ES256), and retries by itself when the server asks for its nonce.
//
// The journey, each outcome in the report:
//   client_credentials  (confidential clients) a DPoP-bound token
//   code                code + PKCE S256 + dpop_jkt (the key's thumbprint binds the code): the user
//                       signs in and consents on the real pages (the Python side, over HTTP);
//                       the code redeemed with a proof; UserInfo with the bound token and a proof
//   refresh             the refresh token with a proof; UserInfo again with the new token
//   introspection       (confidential clients) what grantd says of the bound token
//
// Protocol: {"ask": "authorize", "url"} on stdout; the answer on stdin: {"url": the callback}.
// The last line on stdout is {"report": ...}.
//
// Environment: GRANTD_ISSUER, CLIENT_ID, CLIENT_SECRET (absent: a public client), REDIRECT_URI.
import * as client from 'openid-client';
import { createInterface } from 'node:readline';

const { GRANTD_ISSUER, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI } = process.env;
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const say = (object) => process.stdout.write(JSON.stringify(object) + '\n');
const payloadOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());

// allowInsecureRequests: only because the test server is plain http on loopback (127.0.0.1).
const config = await client.discovery(
  new URL(GRANTD_ISSUER),
  CLIENT_ID,
  CLIENT_SECRET ? undefined : { token_endpoint_auth_method: 'none' },
  CLIENT_SECRET ? client.ClientSecretBasic(CLIENT_SECRET) : client.None(),
  { execute: [client.allowInsecureRequests] },
);
const DPoP = client.getDPoPHandle(config, await client.randomDPoPKeyPair('ES256'));
const jkt = await DPoP.calculateThumbprint();
const report = {
  jkt,
  dpop_signing_alg_values_supported: config.serverMetadata().dpop_signing_alg_values_supported,
};

if (CLIENT_SECRET) {
  const tokens = await client.clientCredentialsGrant(config, { scope: 'read_profile' }, { DPoP });
  report.client_credentials = { token_type: tokens.token_type, cnf: payloadOf(tokens.access_token).cnf };
}

const codeVerifier = client.randomPKCECodeVerifier();
const state = client.randomState();
const url = client.buildAuthorizationUrl(config, {
  redirect_uri: REDIRECT_URI,
  scope: 'openid read_profile',
  code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
  code_challenge_method: 'S256',
  state,
  dpop_jkt: jkt,
});
say({ ask: 'authorize', url: url.href });
const { value } = await lines.next();
const callback = new URL(JSON.parse(value).url);
const tokens = await client.authorizationCodeGrant(
  config, callback, { pkceCodeVerifier: codeVerifier, expectedState: state }, undefined, { DPoP },
);
const sub = tokens.claims().sub;
const info = await client.fetchUserInfo(config, tokens.access_token, sub, { DPoP });
report.code = {
  token_type: tokens.token_type,
  cnf: payloadOf(tokens.access_token).cnf,
  userinfo_sub_matches: info.sub === sub,
};

const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token, undefined, { DPoP });
const again = await client.fetchUserInfo(config, refreshed.access_token, sub, { DPoP });
report.refresh = {
  token_type: refreshed.token_type,
  cnf: payloadOf(refreshed.access_token).cnf,
  userinfo_sub_matches: again.sub === sub,
};

if (CLIENT_SECRET) {
  const introspected = await client.tokenIntrospection(config, refreshed.access_token);
  report.introspection = { active: introspected.active, token_type: introspected.token_type, cnf: introspected.cnf };
}
lines.return?.();
say({ report });
process.exit(0);
