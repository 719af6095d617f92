// A strict, certified OpenID provider (panva/oidc-provider) for tests/test_oidc_strict.py.
//
//   node strict_provider.mjs <port> <config.json>
//
// config.json: { "redirect_uris": [...], "post_logout_redirect_uris": [...],
//                "cli_redirect_uri": "http://127.0.0.1/cb" }
//
// What makes it strict, on purpose, because that is how real deployments behave:
// - PKCE (S256) is required for every client.
// - End-user claims (name, email, groups) are served by userinfo only; with the code
//   flow the ID token carries sub and protocol claims, nothing else (conformIdTokenClaims).
// - Access tokens for a resource indicator are RFC 9068 JWTs (typ at+jwt) with that
//   resource as audience; without one they are opaque and only good for userinfo.
// - RFC 9207 `iss` in every authorization response, RP-initiated logout.
//
// Test-only endpoints (no browser needed):
//   GET  /interaction/:uid          the login prompt, as a tiny HTML form
//   POST /interaction/:uid/login    form field `login` = the subject to sign in as
//   PUT  /test/users/:sub           JSON claims served for that subject
//   POST /test/rotate               sign with a fresh key from now on (old key stays
//                                   published), as a provider rotating its keys does
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

import Provider, { errors } from 'oidc-provider';

const port = Number(process.argv[2]);
const config = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'));
const issuer = `http://127.0.0.1:${port}`;

const OIDC_SCOPES = new Set(['openid', 'profile', 'email', 'offline_access']);
const users = new Map();
// Newest first: oidc-provider signs with the first matching key.
const signingKeys = [newKey()];

function newKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), alg: 'RS256', use: 'sig' };
}

function buildProvider() {
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'oculab',
        client_secret: 'client-secret',
        redirect_uris: config.redirect_uris,
        post_logout_redirect_uris: config.post_logout_redirect_uris,
        response_types: ['code'],
        grant_types: ['authorization_code'],
      },
      {
        // A script or CLI getting an access token for Oculab's API.
        client_id: 'oculab-cli',
        token_endpoint_auth_method: 'none',
        redirect_uris: [config.cli_redirect_uri],
        response_types: ['code'],
        grant_types: ['authorization_code'],
      },
    ],
    jwks: { keys: signingKeys },
    // Fixed, so that cookies survive swapping in a provider with rotated keys.
    cookies: { keys: ['strict-provider-test-cookie-key'] },
    pkce: { required: () => true },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username', 'groups'],
    },
    conformIdTokenClaims: true,
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: (ctx, client, oneOf) => oneOf,
        useGrantedResource: () => false,
        getResourceServerInfo: (ctx, resource) => {
          if (!/^https?:\/\//.test(resource)) throw new errors.InvalidTarget();
          return {
            scope: 'api',
            audience: resource,
            accessTokenTTL: 3600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    // First-party clients: everything they ask for is granted, so no consent prompt.
    async loadExistingGrant(ctx) {
      const { client, session, params } = ctx.oidc;
      const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
      let grant = grantId ? await ctx.oidc.provider.Grant.find(grantId) : undefined;
      if (!grant) {
        grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
      }
      const scopes = String(params.scope || 'openid').split(' ');
      grant.addOIDCScope(scopes.filter((s) => OIDC_SCOPES.has(s)).join(' '));
      const apiScopes = scopes.filter((s) => !OIDC_SCOPES.has(s)).join(' ');
      for (const resource of [].concat(params.resource || [])) {
        grant.addResourceScope(resource, apiScopes);
      }
      await grant.save();
      return grant;
    },
    async findAccount(ctx, sub) {
      return {
        accountId: sub,
        async claims() {
          return { sub, ...(users.get(sub) || {}) };
        },
      };
    },
    ttl: { AccessToken: 3600, AuthorizationCode: 60, IdToken: 3600, Interaction: 600, Session: 86400, Grant: 86400 },
  });
  return provider;
}

let provider = buildProvider();
let handler = provider.callback();

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res, status, body, type = 'text/plain') {
  res.writeHead(status, { 'content-type': type });
  res.end(body);
}

async function interaction(req, res, parts) {
  const [, , uid, action] = parts;
  if (req.method === 'GET' && !action) {
    const details = await provider.interactionDetails(req, res);
    send(
      res,
      200,
      `<!DOCTYPE html><title>${details.prompt.name}</title>` +
        `<!-- ${JSON.stringify(details.prompt).replaceAll('--', '- -')} -->` +
        `<form method="post" action="/interaction/${uid}/login" data-prompt="${details.prompt.name}">` +
        '<input name="login"><button>Sign in</button></form>',
      'text/html',
    );
    return;
  }
  if (req.method === 'POST' && action === 'login') {
    const login = new URLSearchParams(await readBody(req)).get('login');
    if (!login) {
      send(res, 400, 'login is required');
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
    return;
  }
  send(res, 404, 'not found');
}

async function testApi(req, res, parts) {
  if (req.method === 'PUT' && parts[2] === 'users' && parts[3]) {
    users.set(decodeURIComponent(parts[3]), JSON.parse(await readBody(req)));
    send(res, 204, '');
    return;
  }
  if (req.method === 'POST' && parts[2] === 'rotate') {
    signingKeys.unshift(newKey());
    // Sessions, grants and codes live in the module-level memory adapter, so the new
    // provider instance carries on where the old one left off.
    provider = buildProvider();
    handler = provider.callback();
    send(res, 200, JSON.stringify({ kid: signingKeys[0].kid }), 'application/json');
    return;
  }
  send(res, 404, 'not found');
}

const server = http.createServer(async (req, res) => {
  try {
    const parts = new URL(req.url, issuer).pathname.split('/');
    if (parts[1] === 'interaction') await interaction(req, res, parts);
    else if (parts[1] === 'test') await testApi(req, res, parts);
    else handler(req, res);
  } catch (err) {
    console.error(err);
    if (!res.headersSent) send(res, 500, String(err));
  }
});
server.listen(port, '127.0.0.1', () => console.log(`strict provider listening on ${issuer}`));
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
