// Interop: openid-client 6 as the app of a FAPI 2.0 profile (security_profile fapi2) against a real
// `grantd serve` (tests/test_fapi2_interop.py runs it): PrivateKeyJwt client authentication (the
// library's assertions, aud the issuer), buildAuthorizationUrlWithPAR with PKCE S256, the code
// grant (the library checks the callback's state and RFC 9207 iss, and the ID token), then a
// refresh, whose refresh token is the same one (the profile does not rotate).
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
});
process.stdout.write(JSON.stringify({ ask: 'authorize', url: url.href }) + '\n');
const { value } = await lines.next();
const callback = new URL(JSON.parse(value).url);
const tokens = await client.authorizationCodeGrant(config, callback, { pkceCodeVerifier, expectedState, expectedNonce });
const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
process.stdout.write(JSON.stringify({
  report: {
    authorization_url_parameters: [...url.searchParams.keys()].sort(),
    callback_iss: callback.searchParams.get('iss'),
    scope: tokens.scope,
    id_token_aud: tokens.claims().aud,
    same_refresh_token: refreshed.refresh_token === tokens.refresh_token,
    new_access_token: refreshed.access_token !== tokens.access_token,
  },
}) + '\n');
process.exit(0);
