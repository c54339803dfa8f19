// Interop: openid-client 6 (an OpenID-certified relying party no one here wrote) against a real grantd.
//
// Run by tests/test_interop_openid_node.py. The Python side plays the user in headless Chromium
// (sign-in, consent, the logout page); this script plays the app and speaks to the server only
// through openid-client, except where the library has no call for it (said where it happens).
//
// The journey, each step's outcome recorded in the report:
//   discovery
//   first      code + PKCE S256 + nonce + state: the user signs in and consents; the library
//              validates the ID token (signature by the JWKS, iss, aud, exp, nonce, at_hash) and
//              the RFC 9207 iss of the callback; userinfo GET and POST (same sub); refresh (a
//              new ID token, validated); the code replayed, and what that did to its tokens
//   par        RFC 9126: buildAuthorizationUrlWithPAR pushes the request (client_secret_basic at
//              the PAR endpoint); the browser carries only client_id + request_uri; prompt=none
//              with the session: the code, redeemed; the same URL again: grantd's error page,
//              never the app (single use)
//   silent     prompt=none with the session, max_age=3600: the callback with a wrong iss and
//              without iss is refused by the library, then the real one is redeemed
//   form_post  prompt=none, response_mode=form_post: the browser posts the answer; the library
//              reads it from the POST
//   max_age    max_age=1 once the session is older: the user signs in again; auth_time is checked
//   login      prompt=login, offline_access added: the user signs in again and consents
//   logout     end_session_endpoint with id_token_hint (no post_logout_redirect_uri): the
//              signed-out page; then the refresh tokens: those without offline_access end
//              (the silent and max_age grants'), the login grant's (offline_access) lives on
//   after      prompt=none without a session: login_required, as the library reports it
//   post_logout (when POST_LOGOUT_REDIRECT_URI is set) sign in, then end_session_endpoint with
//              id_token_hint, post_logout_redirect_uri and state: back at the app with state;
//              then prompt=none: login_required
//
// Protocol: one JSON line on stdout per thing the user must do ({"ask": "authorize" | "visit",
// "step", "url", ...}); the answer is one JSON line on stdin ({"url": where the browser landed,
// ...}). The last line on stdout is {"report": ...}.
//
// Environment: GRANTD_ISSUER, CLIENT_ID, CLIENT_SECRET (absent: a public client), REDIRECT_URI,
// POST_LOGOUT_REDIRECT_URI (optional).

import * as client from 'openid-client';
import { createInterface } from 'node:readline';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const issuer = new URL(env('GRANTD_ISSUER'));
const clientId = env('CLIENT_ID');
const clientSecret = process.env.CLIENT_SECRET;
const redirectUri = env('REDIRECT_URI');
const postLogoutRedirectUri = process.env.POST_LOGOUT_REDIRECT_URI;

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const say = (object) => process.stdout.write(JSON.stringify(object) + '\n');
async function ask(question) {
  say(question);
  const { value, done } = await lines.next();
  if (done) throw new Error(`no answer to ${JSON.stringify(question)}`);
  return JSON.parse(value);
}

// What a refused call threw, as the library reports it (AuthorizationResponseError,
// ResponseBodyError, ClientError...).
async function errorOf(promise) {
  try {
    await promise;
  } catch (err) {
    return {
      name: err.name,
      code: err.code ?? null,
      error: err.error ?? null,
      status: err.status ?? null,
      message: err.message,
      // openid-client wraps the check that failed (oauth4webapi's) as the cause
      cause: err.cause instanceof Error ? err.cause.message : null,
    };
  }
  return null;
}

const payloadOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
const headerOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[0], 'base64url').toString());

const report = {};

// ---------------------------------------------------------------- discovery

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
  userinfo_endpoint: metadata.userinfo_endpoint,
  end_session_endpoint: metadata.end_session_endpoint,
  jwks_uri: metadata.jwks_uri,
  id_token_signing_alg_values_supported: metadata.id_token_signing_alg_values_supported,
  authorization_response_iss_parameter_supported: metadata.authorization_response_iss_parameter_supported,
  pushed_authorization_request_endpoint: metadata.pushed_authorization_request_endpoint,
  require_pushed_authorization_requests: metadata.require_pushed_authorization_requests,
  supports_pkce: config.serverMetadata().supportsPKCE(),
};

// ---------------------------------------------------------------- the authorization request

// An authorization request with PKCE S256, a nonce and a state; the user acts on it in the
// browser; returns the callback URL and the checks the library needs to redeem it.
async function authorize(step, parameters = {}, { maxAge, minSessionAge, pushed = false } = {}) {
  const codeVerifier = client.randomPKCECodeVerifier();
  const nonce = client.randomNonce();
  const state = client.randomState();
  // pushed: RFC 9126, the library POSTs the parameters to the PAR endpoint and builds the URL of
  // client_id + request_uri.
  const build = pushed ? client.buildAuthorizationUrlWithPAR : client.buildAuthorizationUrl;
  const url = await build(config, {
    redirect_uri: redirectUri,
    scope: 'openid profile email',
    code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
    nonce,
    state,
    ...(maxAge !== undefined && { max_age: String(maxAge) }),
    ...parameters,
  });
  const answer = await ask({ ask: 'authorize', step, url: url.href, min_session_age: minSessionAge ?? 0 });
  return {
    url,
    callback: new URL(answer.url),
    form: answer.form ?? null, // response_mode=form_post: the body the browser posted to the callback
    checks: { pkceCodeVerifier: codeVerifier, expectedNonce: nonce, expectedState: state, maxAge },
  };
}

// The library's own code grant: the callback's state and iss (RFC 9207), the code for tokens,
// the ID token (signature by the published JWKS, iss, aud, exp, iat, nonce, auth_time against
// max_age, at_hash of the access token).
async function redeem(step, { callback, checks }) {
  const tokens = await client.authorizationCodeGrant(config, callback, checks);
  const claims = tokens.claims();
  report[step] = {
    callback_parameters: [...callback.searchParams.keys()].sort(),
    id_token_header: headerOf(tokens.id_token),
    id_token_claims: claims,
    nonce_sent: checks.expectedNonce,
    scope: tokens.scope,
    token_type: tokens.token_type,
    has_refresh_token: typeof tokens.refresh_token === 'string',
  };
  return tokens;
}

// ---------------------------------------------------------------- first sign-in

const first = await authorize('first');
const firstTokens = await redeem('first', first);
const sub = firstTokens.claims().sub;

// UserInfo, GET: the library's fetchUserInfo, which also requires the same sub as the ID token.
const userinfoGet = await client.fetchUserInfo(config, firstTokens.access_token, sub);
// UserInfo, POST: openid-client has no POST form of fetchUserInfo. Its fetchProtectedResource
// sends a POST with the token in the Authorization header...
const posted = await client.fetchProtectedResource(
  config, firstTokens.access_token, new URL(metadata.userinfo_endpoint), 'POST', null,
);
// ...and a plain fetch sends the token in the form body (RFC 6750 §2.2), which no library call does.
const formPosted = await fetch(metadata.userinfo_endpoint, {
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams({ access_token: firstTokens.access_token }),
});
report.userinfo = {
  get: userinfoGet,
  post_header: { status: posted.status, body: await posted.json() },
  post_form: { status: formPosted.status, body: await formPosted.json() },
};

// Refresh: a new ID token (Core §12.2), validated by the library (signature, iss, aud, exp).
let refreshOfFirst = firstTokens.refresh_token;
const refreshError = await errorOf((async () => {
  const refreshed = await client.refreshTokenGrant(config, refreshOfFirst);
  refreshOfFirst = refreshed.refresh_token ?? refreshOfFirst;
  report.refresh = {
    id_token_claims: refreshed.claims() ?? null,
    rotated: refreshed.refresh_token !== firstTokens.refresh_token,
    new_access_token: refreshed.access_token !== firstTokens.access_token,
  };
})());
if (refreshError) report.refresh = { error: refreshError };

// The same code once more: refused at the token endpoint (the library validates the callback
// again, sends the code, and reports the server's error).
report.replay = await errorOf(client.authorizationCodeGrant(config, first.callback, first.checks));
// What the replay did to the tokens of the first redemption (RFC 6749 §4.1.2: SHOULD revoke them).
report.replay_after = {
  userinfo: await errorOf(client.fetchUserInfo(config, firstTokens.access_token, sub)),
  refresh: await errorOf(client.refreshTokenGrant(config, refreshOfFirst)),
};

// ---------------------------------------------------------------- a pushed authorization request

const par = await authorize('par', { prompt: 'none' }, { pushed: true });
const parTokens = await redeem('par', par);
report.par_url_parameters = [...par.url.searchParams.keys()].sort();
report.par_sub = parTokens.claims().sub;
// The same request_uri again: spent, so grantd shows an error page and does not go back to the app.
report.par_reused = await ask({ ask: 'visit', step: 'par_reused', url: par.url.href });

// ---------------------------------------------------------------- prompt=none with the session

const silent = await authorize('silent', { prompt: 'none' }, { maxAge: 3600 });
const wrongIss = new URL(silent.callback);
wrongIss.searchParams.set('iss', 'https://attacker.example');
const noIss = new URL(silent.callback);
noIss.searchParams.delete('iss');
report.iss_check = {
  wrong: await errorOf(client.authorizationCodeGrant(config, wrongIss, silent.checks)),
  missing: await errorOf(client.authorizationCodeGrant(config, noIss, silent.checks)),
};
const silentTokens = await redeem('silent', silent); // the same code, untouched by the refused attempts

// ---------------------------------------------------------------- response_mode=form_post

// The answer is a page whose form the browser posts to the redirect URI at once (its one script
// allowed by the page's CSP); the library reads the answer from that POST.
const formPost = await authorize('form_post', { prompt: 'none', response_mode: 'form_post' });
const formPostTokens = await client.authorizationCodeGrant(
  config,
  new Request(formPost.callback, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: formPost.form ?? '',
  }),
  formPost.checks,
);
report.form_post = {
  posted: formPost.form !== null,
  parameters: [...new URLSearchParams(formPost.form ?? '').keys()].sort(),
  sub: formPostTokens.claims().sub,
};

// ---------------------------------------------------------------- max_age, prompt=login

// The session is older than a second by now (the Python side waits if not): sign in again.
const maxAgeTokens = await redeem('max_age', await authorize('max_age', {}, { maxAge: 1, minSessionAge: 2 }));

const loginTokens = await redeem(
  'login', await authorize('login', { prompt: 'login', scope: 'openid profile email offline_access' }),
);

// ---------------------------------------------------------------- RP-initiated logout

const logoutUrl = client.buildEndSessionUrl(config, { id_token_hint: loginTokens.id_token });
report.logout = {
  url_parameters: [...logoutUrl.searchParams.keys()].sort(),
  browser: await ask({ ask: 'visit', step: 'logout', url: logoutUrl.href }),
};
// Without offline_access, a grant ends with the session; with it, it outlives it (Core §11). The
// silent grant was made in the first session, the max_age one in the session of the second
// sign-in, the login one in the third's, which the logout ended: the browser has one session.
report.logout.refresh_without_offline_access = {
  silent: await errorOf(client.refreshTokenGrant(config, silentTokens.refresh_token)),
  max_age: await errorOf(client.refreshTokenGrant(config, maxAgeTokens.refresh_token)),
};
const offline = await errorOf((async () => {
  const refreshed = await client.refreshTokenGrant(config, loginTokens.refresh_token);
  report.logout.offline_refreshed_sub = refreshed.claims()?.sub ?? null;
})());
report.logout.refresh_with_offline_access = offline;

const after = await authorize('after', { prompt: 'none' });
report.after = {
  callback_parameters: [...after.callback.searchParams.keys()].sort(),
  error: await errorOf(client.authorizationCodeGrant(config, after.callback, after.checks)),
};

// ---------------------------------------------------------------- logout back to the app

if (postLogoutRedirectUri) {
  const again = await redeem('post_logout_signin', await authorize('post_logout_signin'));
  const state = client.randomState();
  const url = client.buildEndSessionUrl(config, {
    id_token_hint: again.id_token,
    post_logout_redirect_uri: postLogoutRedirectUri,
    state,
  });
  report.post_logout = { state, browser: await ask({ ask: 'visit', step: 'post_logout', url: url.href }) };
  const none = await authorize('post_logout_after', { prompt: 'none' });
  report.post_logout.after = await errorOf(client.authorizationCodeGrant(config, none.callback, none.checks));
}

say({ report });
