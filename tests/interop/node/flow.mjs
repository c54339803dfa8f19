// Interop: oauth4webapi and jose (npm packages no one here wrote) as the app, against a real grantd.
//
// Run by tests/test_interop_node.py. The Python side plays the user (sign-in and consent on the
// hosted pages); this script plays the app and speaks to the server only through the libraries:
//   discovery -> authorization URL with PKCE S256 -> (stdout: the URL; stdin: the callback URL)
//   -> validate the callback (state, iss) -> code for tokens -> validate the JWT access token
//   -> introspect -> refresh -> introspect -> revoke access and refresh tokens -> introspect again.
// It prints one JSON line per step it needs from the Python side and a last JSON line: the report.
//
// Environment: GRANTD_ISSUER, CLIENT_ID, CLIENT_SECRET (not for "none"), AUTH_METHOD
// (client_secret_basic | client_secret_post | none), REDIRECT_URI, SCOPE, INTROSPECTION_SECRET.

import * as oauth from 'oauth4webapi';
import * as jose from 'jose';
import { createInterface } from 'node:readline';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const issuer = new URL(env('GRANTD_ISSUER'));
const authMethod = env('AUTH_METHOD');
const redirectUri = env('REDIRECT_URI');
const scope = env('SCOPE');
const client = { client_id: env('CLIENT_ID'), token_endpoint_auth_method: authMethod };
const clientAuth = {
  client_secret_basic: () => oauth.ClientSecretBasic(env('CLIENT_SECRET')),
  client_secret_post: () => oauth.ClientSecretPost(env('CLIENT_SECRET')),
  none: () => oauth.None(),
}[authMethod]();
// Introspection is for confidential callers: the app's backend, with a key secret of the same app.
const introspectionAuth = oauth.ClientSecretBasic(env('INTROSPECTION_SECRET'));
// The test server is on loopback over http; the libraries insist on https unless told.
const insecure = { [oauth.allowInsecureRequests]: true };

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const say = (object) => process.stdout.write(JSON.stringify(object) + '\n');
const report = {};

async function errorOf(promise) {
  try {
    await promise;
  } catch (err) {
    return { name: err.name, code: err.code ?? null, error: err.error ?? null, status: err.status ?? null };
  }
  return null;
}

async function introspect(as, token, hint) {
  const response = await oauth.introspectionRequest(as, client, introspectionAuth, token, {
    ...insecure,
    additionalParameters: { token_type_hint: hint },
  });
  return oauth.processIntrospectionResponse(as, client, response);
}

async function revoke(as, token, hint) {
  const response = await oauth.revocationRequest(as, client, clientAuth, token, {
    ...insecure,
    additionalParameters: { token_type_hint: hint },
  });
  await oauth.processRevocationResponse(response);
}

async function validateAccessToken(as, accessToken) {
  // oauth4webapi's RFC 9068 validation (typ at+jwt, required claims, signature by the jwks_uri keys)...
  const request = new Request(issuer, { headers: { authorization: `Bearer ${accessToken}` } });
  const claims = await oauth.validateJwtAccessToken(as, request, as.issuer, insecure);
  // ...and jose's, with the JWK set fetched from the published jwks_uri.
  const jwks = jose.createRemoteJWKSet(new URL(as.jwks_uri));
  const { payload, protectedHeader } = await jose.jwtVerify(accessToken, jwks, {
    issuer: as.issuer,
    audience: as.issuer,
    typ: 'at+jwt',
    algorithms: ['ES256'],
    requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'client_id'],
  });
  return { claims, jose_payload: payload, header: protectedHeader };
}

async function main() {
  // Discovery (RFC 8414): processDiscoveryResponse checks the issuer equals the one asked for.
  const as = await oauth.processDiscoveryResponse(
    issuer,
    await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }),
  );
  report.discovery = as;

  // The authorization request, PKCE S256.
  const codeVerifier = oauth.generateRandomCodeVerifier();
  const codeChallenge = await oauth.calculatePKCECodeChallenge(codeVerifier);
  const state = oauth.generateRandomState();
  const authorizationUrl = new URL(as.authorization_endpoint);
  authorizationUrl.search = new URLSearchParams({
    response_type: 'code',
    client_id: client.client_id,
    redirect_uri: redirectUri,
    scope,
    state,
    code_challenge: codeChallenge,
    code_challenge_method: 'S256',
  }).toString();
  say({ authorization_url: authorizationUrl.href });

  const { value: callback, done } = await lines.next();
  if (done) throw new Error('no callback URL on stdin');
  report.state = state;
  report.callback = callback.trim();

  // The callback: state and iss (RFC 9207) checked by the library.
  const params = oauth.validateAuthResponse(as, client, new URL(report.callback), state);
  report.callback_parameters = [...params.keys()].sort();

  const tokenResponse = await oauth.authorizationCodeGrantRequest(
    as, client, clientAuth, params, redirectUri, codeVerifier, insecure,
  );
  const tokens = await oauth.processAuthorizationCodeResponse(as, client, tokenResponse);
  report.token_response = {
    cache_control: tokenResponse.headers.get('cache-control'),
    token_type: tokens.token_type,
    scope: tokens.scope,
    expires_in: tokens.expires_in,
    has_refresh_token: typeof tokens.refresh_token === 'string',
  };
  report.access_token = await validateAccessToken(as, tokens.access_token);
  report.introspection = {
    access: await introspect(as, tokens.access_token, 'access_token'),
    refresh: await introspect(as, tokens.refresh_token, 'refresh_token'),
  };

  // Refresh: rotation.
  const refreshed = await oauth.processRefreshTokenResponse(
    as, client,
    await oauth.refreshTokenGrantRequest(as, client, clientAuth, tokens.refresh_token, insecure),
  );
  report.refresh = {
    rotated: refreshed.refresh_token !== tokens.refresh_token,
    scope: refreshed.scope,
    access_token: await validateAccessToken(as, refreshed.access_token),
    old_refresh_introspection: await introspect(as, tokens.refresh_token, 'refresh_token'),
    new_access_introspection: await introspect(as, refreshed.access_token, 'access_token'),
  };

  // Revocation (RFC 7009) of the access token, then of the refresh token.
  await revoke(as, refreshed.access_token, 'access_token');
  const afterAccessRevoked = {
    access: await introspect(as, refreshed.access_token, 'access_token'),
    refresh: await introspect(as, refreshed.refresh_token, 'refresh_token'),
  };
  await revoke(as, refreshed.refresh_token, 'refresh_token');
  report.revocation = {
    after_access_revoked: afterAccessRevoked,
    after_refresh_revoked: await introspect(as, refreshed.refresh_token, 'refresh_token'),
    refresh_with_revoked: await errorOf(
      oauth.refreshTokenGrantRequest(as, client, clientAuth, refreshed.refresh_token, insecure).then((response) =>
        oauth.processRefreshTokenResponse(as, client, response),
      ),
    ),
  };
  say({ report });
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`${err?.stack ?? err}\n${err?.cause ? JSON.stringify(err.cause, null, 2) : ''}\n`);
    process.exit(1);
  },
);
