// Interop: openid-client 6 as the app of a FAPI 2.0 profile (security_profile fapi2) against a real
// `grantd serve` (tests/test_fapi2_interop.py runs it): PrivateKeyJwt client authentication (the
// library's assertions, aud the issuer), buildAuthorizationUrlWithPAR with PKCE S256, the code
// grant (the library checks the callback's state and RFC 9207 iss, and the ID token), then a
// refresh, whose refresh token is the same one (the profile does not rotate).
//
// The profile requires DPoP (RFC 9449): every request to the server goes with the library's DPoP
// handle (getDPoPHandle, a key pair generated here): the pushed request (its proof binds the code),
// the code grant, the refresh and UserInfo. The report carries the key's public JWK, so that the
// test computes its thumbprint itself, and what the server answered UserInfo for the bound token
// sent as a bearer token.
//
// Protocol: one JSON line on stdout asks the user to authorize ({"ask": "authorize", "url"});
// the answer on stdin is {"url": where the browser landed}. The last line is the report.
//
// Environment: GRANTD_ISSUER, CLIENT_ID, PRIVATE_JWK (the app's EC P-256 private key), REDIRECT_URI.
import * as client from 'openid-client';
import { createInterface } from 'node:readline';

const { GRANTD_ISSUER, CLIENT_ID, PRIVATE_JWK, REDIRECT_URI } = process.env;
const jwk = JSON.parse(PRIVATE_JWK);
const key = await crypto.subtle.importKey('jwk', jwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

// allowInsecureRequests: only because the test server is plain http on loopback (127.0.0.1).
const config = await client.discovery(
  new URL(GRANTD_ISSUER),
  CLIENT_ID,
  {},
  client.PrivateKeyJwt({ key, kid: jwk.kid }),
  { execute: [client.allowInsecureRequests] },
);
const dpopKeys = await client.randomDPoPKeyPair('ES256');
const DPoP = client.getDPoPHandle(config, dpopKeys);
const payloadOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
const pkceCodeVerifier = client.randomPKCECodeVerifier();
const expectedState = client.randomState();
const expectedNonce = client.randomNonce();
const url = await client.buildAuthorizationUrlWithPAR(config, {
  redirect_uri: REDIRECT_URI,
  scope: 'openid read_profile',
  code_challenge: await client.calculatePKCECodeChallenge(pkceCodeVerifier),
  code_challenge_method: 'S256',
  state: expectedState,
  nonce: expectedNonce,
}, { DPoP });
process.stdout.write(JSON.stringify({ ask: 'authorize', url: url.href }) + '\n');
const { value } = await lines.next();
const callback = new URL(JSON.parse(value).url);
const tokens = await client.authorizationCodeGrant(
  config, callback, { pkceCodeVerifier, expectedState, expectedNonce }, undefined, { DPoP },
);
const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token, undefined, { DPoP });
const sub = tokens.claims().sub;
const info = await client.fetchUserInfo(config, refreshed.access_token, sub, { DPoP });
let asBearer;
try {
  await client.fetchUserInfo(config, refreshed.access_token, sub);  // no DPoP: Authorization: Bearer
  asBearer = { answered: true };
} catch (err) {
  // A WWWAuthenticateChallengeError: the challenges the library parsed, as [scheme, error].
  asBearer = { status: err.status, code: err.code, challenges: (err.cause ?? []).map((c) => [c.scheme, c.parameters?.error ?? null]) };
}
process.stdout.write(JSON.stringify({
  report: {
    authorization_url_parameters: [...url.searchParams.keys()].sort(),
    callback_iss: callback.searchParams.get('iss'),
    scope: tokens.scope,
    id_token_aud: tokens.claims().aud,
    same_refresh_token: refreshed.refresh_token === tokens.refresh_token,
    new_access_token: refreshed.access_token !== tokens.access_token,
    dpop_public_jwk: await crypto.subtle.exportKey('jwk', dpopKeys.publicKey),
    token_type: tokens.token_type,
    cnf: payloadOf(tokens.access_token).cnf,
    refreshed_token_type: refreshed.token_type,
    refreshed_cnf: payloadOf(refreshed.access_token).cnf,
    userinfo_sub_matches: info.sub === sub,
    userinfo_as_bearer: asBearer,
  },
}) + '\n');
process.exit(0);
