// Interop: openid-client 6's dynamicClientRegistration (RFC 7591) against a real `grantd serve`
// (tests/test_interop_registration.py runs it): discovery finds the registration_endpoint, the
// library registers a confidential client with the developer's initial access token, then uses the
// credentials it got: the client_credentials grant and introspection of the token.
//
// It prints one JSON report, with the registration's credentials for the test to manage the client
// with raw RFC 7592 requests.
import * as client from 'openid-client';

const { GRANTD_ISSUER, INITIAL_ACCESS_TOKEN } = process.env;

// allowInsecureRequests: only because the test server is plain http on loopback (127.0.0.1).
const config = await client.dynamicClientRegistration(
  new URL(GRANTD_ISSUER),
  {
    client_name: 'openid-client registered',
    redirect_uris: ['https://rp.example.org/cb'],
    grant_types: ['authorization_code', 'client_credentials'],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'read_profile',
  },
  undefined,
  { initialAccessToken: INITIAL_ACCESS_TOKEN, execute: [client.allowInsecureRequests] },
);
const registered = config.clientMetadata();
const tokens = await client.clientCredentialsGrant(config, { scope: 'read_profile' });
const introspected = await client.tokenIntrospection(config, tokens.access_token);
console.log(JSON.stringify({
  client_id: registered.client_id,
  client_secret: registered.client_secret,
  registration_access_token: registered.registration_access_token,
  registration_client_uri: registered.registration_client_uri,
  registration_endpoint: config.serverMetadata().registration_endpoint,
  token_type: tokens.token_type,
  scope: tokens.scope,
  active: introspected.active,
  introspected_client_id: introspected.client_id,
}));
