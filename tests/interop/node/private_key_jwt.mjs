// Interop: openid-client 6's PrivateKeyJwt client authentication (RFC 7523) against a real
// `grantd serve` (tests/test_interop_private_key_jwt.py runs it). The app's private key comes as
// a JWK in PRIVATE_JWK (its public half is registered as the app's jwks); each request signs a
// new assertion (iss = sub = client_id, aud = the issuer, a new jti, exp a minute ahead).
//
// It prints one JSON report: client_credentials, then introspection and revocation of the token,
// each authenticated by an assertion.
import * as client from 'openid-client';

const { GRANTD_ISSUER, CLIENT_ID, PRIVATE_JWK } = process.env;
const jwk = JSON.parse(PRIVATE_JWK);
const key = await crypto.subtle.importKey('jwk', jwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);

// allowInsecureRequests: only because the test server is plain http on loopback (127.0.0.1).
const config = await client.discovery(
  new URL(GRANTD_ISSUER),
  CLIENT_ID,
  {},
  client.PrivateKeyJwt({ key, kid: jwk.kid }),
  { execute: [client.allowInsecureRequests] },
);
const tokens = await client.clientCredentialsGrant(config, { scope: 'read_profile' });
const introspected = await client.tokenIntrospection(config, tokens.access_token);
await client.tokenRevocation(config, tokens.access_token);
const after = await client.tokenIntrospection(config, tokens.access_token);
console.log(JSON.stringify({
  token_type: tokens.token_type,
  scope: tokens.scope,
  active: introspected.active,
  client_id: introspected.client_id,
  active_after_revocation: after.active,
}));
