// A real OpenID Provider (panva's certified oidc-provider) on loopback for
// tests/py/test_sso.py. Configured from the environment:
//   OP_PORT          port to listen on (127.0.0.1)
//   OP_ISSUER        issuer identifier (default http://127.0.0.1:<port>)
//   OP_CLIENT_ID, OP_CLIENT_SECRET, OP_REDIRECT_URI   the gateway's client
//   OP_AUTH_METHODS  comma-separated token endpoint auth methods
//                    (default client_secret_basic,client_secret_post)
// Its login page is the library's development interaction: the login typed
// is the account id, any password is accepted. Accounts are in ACCOUNTS.
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.OP_PORT);
const issuer = process.env.OP_ISSUER || `http://127.0.0.1:${port}`;

const ACCOUNTS = {
  'ann@example.com': { email: 'ann@example.com', email_verified: true, name: 'Ann Example' },
  'bob@example.com': { email: 'bob@example.com', email_verified: true, name: 'Bob Unknown' },
  'newcomer@example.com': { email: 'newcomer@example.com', email_verified: true, name: 'New Comer' },
  'eve@other.org': { email: 'eve@other.org', email_verified: true, name: 'Eve Elsewhere' },
  'unverified@example.com': { email: 'unverified@example.com', email_verified: false, name: 'Una Verified' },
};

// A fresh RS256 signing key per run: nothing secret is committed.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: `k-${Date.now()}`, use: 'sig', alg: 'RS256' };

const client = {
  client_id: process.env.OP_CLIENT_ID,
  client_secret: process.env.OP_CLIENT_SECRET,
  redirect_uris: [process.env.OP_REDIRECT_URI],
  grant_types: ['authorization_code'],
  response_types: ['code'],
  id_token_signed_response_alg: 'RS256',
};
const methods = (process.env.OP_AUTH_METHODS || 'client_secret_basic,client_secret_post').split(',');
client.token_endpoint_auth_method = methods[0];

const provider = new Provider(issuer, {
  clients: [
    client,
    // Another application at the same provider, for the "code issued to
    // someone else" test.
    { ...client, client_id: 'another-app', client_secret: 'another-secret-0123456789abcdef' },
  ],
  clientAuthMethods: methods,
  jwks: { keys: [jwk] },
  // Every client must use PKCE (S256 is the only method oidc-provider offers).
  pkce: { required: () => true },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  // The scope's claims in the ID token too, not only from userinfo: the
  // gateway reads the ID token only.
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  async findAccount(_ctx, id) {
    const claims = ACCOUNTS[id];
    if (!claims) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...claims }) };
  },
});
provider.on('server_error', (_ctx, err) => console.error('server_error', err));

provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider ready at ${issuer}`);
});
