// Interop: Neucron's own v1 JavaScript SDK (npm neucron-sdk 0.2.3, unmodified) against a real grantd.
//
// Run by tests/test_interop_neucron_sdk.py, which registered the app (the SDK has no app calls) and
// checks the report this prints as one JSON line. Everything here goes through the SDK:
//   signUp -> signUp again (taken email) -> login on a new SDK object (grantd's dual answer: the v1
//   envelope plus v2's top-level token and platforms) -> login with a wrong password
//   -> POST /oauth/authorize and POST /oauth/token, the v1 OAuth calls, which 0.2.3 has no method
//   for: made with the SDK's own request helper (authentication.request) and its token, as its
//   wallet and pay modules make their calls (Authorization: <token>, no "Bearer ").
//
// The SDK posts to its hard-coded base URL (dist/config.js: https://dev.neucron.io/v1) through the
// global axios it imports. Its files are left alone: a request interceptor on that same axios
// rewrites the base URL to GRANTD_URL + "/v1" and refuses any other URL, so nothing leaves for
// Neucron's host. Each request the SDK made is in the report.
//
// Environment: GRANTD_URL, EMAIL, PASSWORD (the user the SDK signs up), APP_ID, APP_KEY,
// REDIRECT_URI, PERMISSIONS (comma-separated), KEY_ID, KEY_SECRET.

import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import NeucronSDK from 'neucron-sdk';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

// The SDK's own base URL and axios, resolved from the SDK's files (not a second copy of either).
const sdkEntry = import.meta.resolve('neucron-sdk');
const { baseURL: sdkBaseURL } = await import(new URL('./config.js', sdkEntry));
const axios = createRequire(fileURLToPath(sdkEntry))('axios');

const grantdBaseURL = new URL('/v1', env('GRANTD_URL')).href;
const requests = [];
axios.interceptors.request.use((config) => {
  if (!config.url.startsWith(sdkBaseURL)) {
    throw new Error(`the SDK asked for ${config.url}, outside its base URL ${sdkBaseURL}`);
  }
  config.url = grantdBaseURL + config.url.slice(sdkBaseURL.length);
  const authorization = config.headers.Authorization ?? null;
  requests.push({
    method: config.method.toUpperCase(),
    url: config.url,
    content_type: config.headers['Content-Type'] ?? null,
    authorization: authorization === null ? null : authorization.startsWith('Bearer ') ? 'Bearer' : 'raw',
  });
  return config;
});

// What the SDK throws: its own Error (signUp, login wrap axios' error in a message), or axios'.
async function failure(promise) {
  try {
    await promise;
  } catch (err) {
    return { message: err.message, status: err.response?.status ?? null, body: err.response?.data ?? null };
  }
  return null;
}

const email = env('EMAIL');
const password = env('PASSWORD');
const report = { sdk_base_url: sdkBaseURL, requests };

// A new user signs up; the SDK keeps the token of the answer (authentication.authToken).
const newcomer = new NeucronSDK();
report.signup = {
  response: await newcomer.authentication.signUp({ email, password }),
  sdk_token: newcomer.authentication.getAuthToken() ?? null,
};
report.signup_again = await failure(new NeucronSDK().authentication.signUp({ email, password }));

// The same user logs in on another SDK object: the SDK reads response.data.access_token.
const session = new NeucronSDK();
report.login = {
  response: await session.authentication.login({ email, password }),
  sdk_token: session.authentication.getAuthToken() ?? null,
};
const wrong = new NeucronSDK();
report.login_wrong_password = {
  error: await failure(wrong.authentication.login({ email, password: password + '!' })),
  sdk_token: wrong.authentication.getAuthToken() ?? null,
};

// v1 OAuth: the signed-in user authorizes the app, then the app's backend redeems the code.
const userHeaders = { Authorization: session.authentication.getAuthToken(), accept: 'application/json' };
report.authorize = await session.authentication.request.postRequest(
  '/oauth/authorize',
  {
    token: {
      app_id: env('APP_ID'),
      app_key: env('APP_KEY'),
      state: 'sdk-state-1',
      redirect_uri: env('REDIRECT_URI'),
      permissions: env('PERMISSIONS'),
    },
  },
  userHeaders,
);
const backend = new NeucronSDK();
report.token = await backend.authentication.request.postRequest(
  '/oauth/token',
  { token: { auth_code: report.authorize.data.code, key_id: env('KEY_ID'), key_secret: env('KEY_SECRET') } },
  { accept: 'application/json' },
);

process.stdout.write(JSON.stringify({ report }) + '\n');
