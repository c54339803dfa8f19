// A browser-based client of grantd, as a single-page app or the MCP Inspector is: oauth4webapi (an
// independent client library) in the page, every call a cross-origin fetch() from this page's origin.
// Used by tests/browser/test_cors.py, which serves this directory on 127.0.0.1 (the registered
// origin) and reaches it as localhost too (an origin no client registered).
//
//   start(issuer)  discovery, dynamic registration (RFC 7591, first time), PKCE: the authorization URL
//   finish()       on the callback: the code redeemed with a DPoP proof, then UserInfo
//   redeemWithFetch(issuer, form)  a plain fetch() of the token endpoint: what the page can read

import * as oauth from '/oauth4webapi.js';

const insecure = { [oauth.allowInsecureRequests]: true }; // the test server is http on loopback
const SCOPE = 'openid read_profile';
const redirectUri = new URL('/callback.html', location.origin).href;

async function discover(issuerHref) {
  const issuer = new URL(issuerHref);
  return oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oidc', ...insecure }));
}

window.start = async (issuerHref) => {
  const as = await discover(issuerHref);
  let clientId = sessionStorage.getItem('client_id');
  if (!clientId) {
    const response = await fetch(as.registration_endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        client_name: 'Browser SPA', redirect_uris: [redirectUri], token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], scope: SCOPE,
      }),
    });
    const registered = await response.json();
    if (response.status !== 201) throw new Error(`registration: ${response.status} ${JSON.stringify(registered)}`);
    clientId = registered.client_id;
    sessionStorage.setItem('client_id', clientId);
  }
  const verifier = oauth.generateRandomCodeVerifier();
  const state = oauth.generateRandomState();
  sessionStorage.setItem('issuer', issuerHref);
  sessionStorage.setItem('verifier', verifier);
  sessionStorage.setItem('state', state);
  const url = new URL(as.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: 'code', client_id: clientId, redirect_uri: redirectUri, scope: SCOPE, state,
    code_challenge: await oauth.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
  }).toString();
  return { authorization_url: url.href, client_id: clientId, redirect_uri: redirectUri, verifier };
};

window.finish = async () => {
  const as = await discover(sessionStorage.getItem('issuer'));
  const client = { client_id: sessionStorage.getItem('client_id') };
  const params = oauth.validateAuthResponse(as, client, new URL(location.href), sessionStorage.getItem('state'));
  const DPoP = oauth.DPoP(client, await oauth.generateKeyPair('ES256'));
  const response = await oauth.authorizationCodeGrantRequest(
    as, client, oauth.None(), params, redirectUri, sessionStorage.getItem('verifier'), { DPoP, ...insecure },
  );
  const tokens = await oauth.processAuthorizationCodeResponse(as, client, response);
  const claims = oauth.getValidatedIdTokenClaims(tokens);
  const userinfo = await oauth.processUserInfoResponse(
    as, client, claims.sub, await oauth.userInfoRequest(as, client, tokens.access_token, { DPoP, ...insecure }),
  );
  return {
    token_type: tokens.token_type, access_token: tokens.access_token, sub: claims.sub, userinfo_sub: userinfo.sub,
  };
};

window.redeemWithFetch = async (issuerHref, form) => {
  const out = { origin: location.origin };
  const metadata = await fetch(new URL('/.well-known/oauth-authorization-server', issuerHref));
  out.metadata_issuer = (await metadata.json()).issuer;
  try {
    const response = await fetch(new URL('/oauth2/token', issuerHref), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(form),
    });
    out.status = response.status;
    out.body = await response.text();
  } catch (error) {
    out.error = `${error.name}: ${error.message}`;
  }
  return out;
};
