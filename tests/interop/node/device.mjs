// Interop: the device authorization grant (RFC 8628) with openid-client 6 against a real grantd.
//
// Run by tests/test_interop_device.py. This script plays the device: it speaks to the server only
// through openid-client (discovery, initiateDeviceAuthorization, pollDeviceAuthorizationGrant,
// fetchUserInfo). The Python side plays the person in headless Chromium on grantd's pages.
//
// The journey:
//   discovery  the device authorization endpoint and the grant type, as the library read them
//   approve    a device request (scope openid read_profile); the person is asked to approve it
//              while the library polls; the tokens (the library validated the ID token), what the
//              token endpoint answered on the way, and UserInfo with the access token
//   deny       another request; the person denies it; what the library's polling throws
//
// Protocol: one JSON line on stdout per thing the person must do ({"ask": "approve" | "deny",
// "step", "verification_uri", "verification_uri_complete", "user_code"}), and one per answer of
// the token endpoint ({"polled": its error or null, "status"}); this script does not wait for the
// person: it polls, as a device does, while the person acts. The last line is {"report": ...}.
//
// Environment: GRANTD_ISSUER, CLIENT_ID, CLIENT_SECRET (absent: a public client).

import * as client from 'openid-client';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const issuer = new URL(env('GRANTD_ISSUER'));
const clientId = env('CLIENT_ID');
const clientSecret = process.env.CLIENT_SECRET;
const say = (object) => process.stdout.write(JSON.stringify(object) + '\n');

// What a refused call threw, as the library reports it.
async function errorOf(promise) {
  try {
    await promise;
  } catch (err) {
    return { name: err.name, code: err.code ?? null, error: err.error ?? null, status: err.status ?? null, message: err.message };
  }
  return null;
}

const report = {};

// allowInsecureRequests: only because the test server is plain http on loopback (127.0.0.1);
// openid-client refuses http everywhere else, and a real deployment is https.
const config = await client.discovery(
  issuer,
  clientId,
  clientSecret ? undefined : { token_endpoint_auth_method: 'none' },
  clientSecret ? client.ClientSecretBasic(clientSecret) : client.None(),
  { execute: [client.allowInsecureRequests] },
);
const metadata = config.serverMetadata();
report.discovery = {
  issuer: metadata.issuer,
  device_authorization_endpoint: metadata.device_authorization_endpoint,
  grant_types_supported: metadata.grant_types_supported,
};

// Every answer of the token endpoint, as the device received it (the library reads its own copy).
const tokenAnswers = [];
config[client.customFetch] = async (url, options) => {
  const response = await fetch(url, options);
  if (String(url) === metadata.token_endpoint) {
    const body = await response.clone().json().catch(() => null);
    tokenAnswers.push({ status: response.status, error: body?.error ?? null });
    say({ polled: body?.error ?? null, status: response.status });
  }
  return response;
};

async function started(step, decision) {
  const response = await client.initiateDeviceAuthorization(config, { scope: 'openid read_profile' });
  say({
    ask: decision,
    step,
    verification_uri: response.verification_uri,
    verification_uri_complete: response.verification_uri_complete,
    user_code: response.user_code,
  });
  return response;
}

// ---------------------------------------------------------------- approve

{
  const response = await started('approve', 'approve');
  report.approve = {
    user_code: response.user_code,
    expires_in: response.expires_in,
    interval: response.interval,
    device_code_length: response.device_code.length,
  };
  const tokens = await client.pollDeviceAuthorizationGrant(config, response);
  const claims = tokens.claims();
  Object.assign(report.approve, {
    token_endpoint_answers: tokenAnswers.map(({ status, error }) => ({ status, error })),
    token_type: tokens.token_type,
    scope: tokens.scope,
    has_refresh_token: typeof tokens.refresh_token === 'string' && tokens.refresh_token.length > 0,
    id_token_claims: claims,
  });
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  report.approve.userinfo_sub = userinfo.sub;
  // The same device code again: the library's own grant request, once more.
  tokenAnswers.length = 0;
  report.approve.again = await errorOf(
    client.pollDeviceAuthorizationGrant(config, { ...response, interval: 1 }),
  );
}

// ---------------------------------------------------------------- deny

{
  tokenAnswers.length = 0;
  const response = await started('deny', 'deny');
  report.deny = await errorOf(client.pollDeviceAuthorizationGrant(config, response));
  report.deny.token_endpoint_answers = tokenAnswers.map(({ status, error }) => ({ status, error }));
}

say({ report });
