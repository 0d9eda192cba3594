// A real OpenID Provider (oidc-provider 8) for countersign's tests, on plain
// HTTP at http://127.0.0.1:<port>. Started by tests/common/idp.rs:
//
//   IDP_USERS=users.json [IDP_ID_TOKEN_TTL=300] node provider.mjs <port>
//
// Prints `ready <issuer>` on stdout once it listens. Users come from the JSON
// file IDP_USERS ({"dora": {"email", "groups", "password"?}}), read again on
// every lookup so a test can change a user's groups without a restart.
// Test-only controls live under /__test/ on the same server (see `control`).
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

// oidc-provider prints its notices with console.info (stdout); stdout is the
// harness's channel for the ready line alone, so everything else goes to stderr.
console.log = console.info = console.warn = console.error;

const port = Number(process.argv[2] ?? process.env.IDP_PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node provider.mjs <port> (or IDP_PORT)');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const usersFile = process.env.IDP_USERS;
const idTokenTtl = Number(process.env.IDP_ID_TOKEN_TTL ?? 300);
const CLIENT_ID = 'countersign-cli';

function users() {
  return usersFile ? JSON.parse(fs.readFileSync(usersFile, 'utf8')) : {};
}

function newSigningKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), alg: 'RS256', use: 'sig',
  };
}

// keys[0] signs; the rest are only published in /jwks. oidc-provider picks the
// first key that fits the alg, so order alone decides which key signs.
let keys = [newSigningKey()];
let jwksHits = 0;

// Rotation builds a new Provider around the new keys (its keystore is fixed at
// construction). Everything stateful must outlive that: the store below holds
// sessions, grants, interactions and tokens, and the cookie keys are fixed here,
// so a login or refresh token from before a rotation still works after it.
const store = new Map();
const cookieKeys = [crypto.randomBytes(32).toString('hex')];

class MapAdapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    store.set(this.key(id), { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : undefined });
  }

  async find(id) {
    const entry = store.get(this.key(id));
    if (!entry) return undefined;
    if (entry.expiresAt && entry.expiresAt < Date.now()) {
      store.delete(this.key(id));
      return undefined;
    }
    return entry.payload;
  }

  async findBy(field, value) {
    for (const [key, { payload }] of store) {
      if (key.startsWith(`${this.model}:`) && payload[field] === value) return this.find(payload.jti);
    }
    return undefined;
  }

  findByUserCode(userCode) { return this.findBy('userCode', userCode); }

  findByUid(uid) { return this.findBy('uid', uid); }

  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { store.delete(this.key(id)); }

  async revokeByGrantId(grantId) {
    for (const [key, { payload }] of store) if (payload.grantId === grantId) store.delete(key);
  }
}

async function findAccount(ctx, id) {
  const user = users()[id];
  if (!user) return undefined;
  return {
    accountId: id,
    async claims() {
      return {
        sub: id,
        email: user.email,
        email_verified: true,
        preferred_username: user.preferred_username ?? id,
        name: user.name ?? id,
        groups: user.groups ?? [],
      };
    },
  };
}

const html = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${title}</title></head><body><h1>${title}</h1>${body}</body></html>`;

function configuration() {
  return {
    adapter: MapAdapter,
    clients: [{
      client_id: CLIENT_ID,
      // 'native' makes oidc-provider accept any port on a loopback redirect URI
      // (RFC 8252 7.3): http://127.0.0.1:<any>/callback matches the one below.
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/callback'],
    }],
    jwks: { keys },
    cookies: { keys: cookieKeys },
    findAccount,
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['preferred_username', 'name'],
      groups: ['groups'],
    },
    // The scopes' claims go in the ID token itself (not only at userinfo), so
    // countersign reads email and groups from the ID token.
    conformIdTokenClaims: false,
    pkce: { methods: ['S256'], required: () => true },
    // A refresh token whenever the client may use one; by default oidc-provider
    // wants offline_access, which it drops unless the request also has prompt=consent.
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      DeviceCode: 600,
      Grant: 86400,
      IdToken: idTokenTtl,
      Interaction: 3600,
      RefreshToken: 86400,
      Session: 86400,
    },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      deviceFlow: {
        enabled: true,
        // Plain pages around oidc-provider's own forms (which carry the xsrf token).
        async userCodeInputSource(ctx, form, out, err) {
          ctx.body = page('Enter code', `${err ? `<p>error: ${html(err.message)}</p>` : ''}${form}<button type="submit" form="op.deviceInputForm">Continue</button>`);
        },
        async userCodeConfirmSource(ctx, form, client, deviceInfo, userCode) {
          ctx.body = page('Confirm device', `<p>${userCode}</p>${form}<button type="submit" form="op.deviceConfirmForm">Continue</button>`);
        },
        async successSource(ctx) {
          ctx.body = page('Sign-in success', '<p>device signed in</p>');
        },
      },
    },
    // Plain text, so browser.mjs can show the reason when a flow fails.
    async renderError(ctx, out) {
      ctx.type = 'text';
      ctx.body = `error: ${out.error}${out.error_description ? `: ${out.error_description}` : ''}\n`;
    },
  };
}

let provider;
let handler;
function build() {
  provider = new Provider(issuer, configuration());
  for (const event of ['server_error', 'authorization.error', 'grant.error', 'device_authorization.error', 'code_verification.error']) {
    provider.on(event, (ctx, err) => console.error(`${event}: ${err.message} ${err.error_description ?? ''}`));
  }
  handler = provider.callback();
}
build();

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

const b64url = (x) => Buffer.from(x).toString('base64url');

// GET shows a login form; POST login=<user> (and password=, when the user has
// one) signs in AND consents to everything requested, in one step.
// POST abort=1 ends the interaction with access_denied.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  if (req.method === 'GET') {
    send(res, 200, 'text/html', page('Sign in', `<p>${html(details.params.client_id)} asks for: ${html(details.params.scope ?? '')}</p>
<form method="post" action="/interaction/${html(details.uid)}">
<input name="login" placeholder="user"> <input name="password" type="password" placeholder="password">
<button type="submit">Sign in</button></form>`));
    return;
  }
  const form = new URLSearchParams(await readBody(req));
  if (form.get('abort')) {
    await provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'the user declined' }, { mergeWithLastSubmission: false });
    return;
  }
  const login = form.get('login') ?? '';
  const user = users()[login];
  if (!user || (user.password !== undefined && user.password !== form.get('password'))) {
    send(res, 401, 'text/plain', `login failed: unknown user or wrong password for \`${login}\`\n`);
    return;
  }
  const { params } = details;
  let grant = details.grantId ? await provider.Grant.find(details.grantId) : undefined;
  if (!grant || grant.accountId !== login) {
    grant = new provider.Grant({ accountId: login, clientId: params.client_id });
  }
  if (params.scope) grant.addOIDCScope(params.scope);
  if (params.claims) {
    const { id_token: idToken = {}, userinfo = {} } = JSON.parse(params.claims);
    grant.addOIDCClaims([...Object.keys(idToken), ...Object.keys(userinfo)]);
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, {
    login: { accountId: login },
    consent: { grantId },
  }, { mergeWithLastSubmission: false });
}

// Signs any payload with a provider key: for refusal tests (expired, wrong aud,
// wrong iss, unknown kid). Body: {sub, aud, ttl, claims?, kid?}. `claims`
// overrides the defaults (iss, iat, exp...), and a null value removes one. A
// `kid` naming a published key signs with that key; any other kid is put in the
// header of a token signed with the current key.
function mint({
  sub, aud, ttl = 300, claims = {}, kid,
}) {
  const now = Math.floor(Date.now() / 1000);
  const payload = {
    iss: issuer, sub, aud, iat: now, exp: now + ttl, ...claims,
  };
  for (const [name, value] of Object.entries(payload)) if (value === null || value === undefined) delete payload[name];
  const key = keys.find((k) => k.kid === kid) ?? keys[0];
  const header = { alg: 'RS256', typ: 'JWT', kid: kid ?? key.kid };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  const signature = crypto.sign('sha256', Buffer.from(input), crypto.createPrivateKey({ key, format: 'jwk' }));
  return `${input}.${signature.toString('base64url')}`;
}

async function control(req, res, url) {
  switch (`${req.method} ${url.pathname}`) {
    case 'POST /__test/rotate': {
      // drop_old=1: only the new key is published, so tokens signed before fail.
      const dropOld = ['1', 'true'].includes(url.searchParams.get('drop_old'));
      keys = dropOld ? [newSigningKey()] : [newSigningKey(), ...keys];
      build();
      return send(res, 200, 'application/json', JSON.stringify({ kid: keys[0].kid, kids: keys.map((k) => k.kid) }));
    }
    case 'GET /__test/jwks-hits':
      return send(res, 200, 'application/json', JSON.stringify({ hits: jwksHits }));
    case 'POST /__test/mint':
      return send(res, 200, 'application/jwt', mint(JSON.parse(await readBody(req))));
    default:
      return send(res, 404, 'text/plain', 'no such test control\n');
  }
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    if (url.pathname.startsWith('/__test/')) return await control(req, res, url);
    if (/^\/interaction\/[^/]+$/.test(url.pathname)) return await interaction(req, res);
    if (url.pathname === '/jwks') jwksHits += 1;
    return handler(req, res);
  } catch (err) {
    console.error(err);
    if (!res.headersSent) send(res, 400, 'text/plain', `error: ${err.message}\n`);
    else res.end();
  }
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
// The harness kills us on drop; with IDP_EXIT_ON_EOF=1 a closed stdin (the
// harness gone, even killed) ends us too, so no provider outlives its test.
if (process.env.IDP_EXIT_ON_EOF === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}
