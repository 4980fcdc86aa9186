// A real OpenID Connect provider (panva's oidc-provider) for kms-server's end-to-end
// tests, started by the tests on loopback (kms-server/tests/common/idp.rs).
//
//   PORT=0 CLIENTS='[{"client_id":"kms","client_secret":"s3cret","redirect_uris":["http://127.0.0.1:1234/cb"]}]' \
//     node oidc.mjs
//
// Prints exactly one line on stdout once it listens:
//   {"issuer":"http://127.0.0.1:PORT","port":PORT}
// Everything else (oidc-provider's notices included) goes to stderr.
//
// Login and consent are non-interactive: the interaction page logs the "next user" in
// (POST /__test/next-user) and grants every requested scope, so that a client that
// follows redirects with cookies goes authorize -> interaction -> callback without a form.
//
// Control API, plain JSON on the same port (see README.md beside this file):
//   POST /__test/next-user      {"sub","email","name","groups"?}
//   POST /__test/mode           {"id_token": "normal"|"alg_none"|"hs256"|"wrong_nonce"|
//                                "wrong_aud"|"expired"|"wrong_iss"|"bad_signature"}
//   POST /__test/rotate-keys    new signing keys, new kids; the JWKS serves only them
//   POST /__test/revoke-refresh every refresh_token grant fails (invalid_grant) from now on
//   GET  /__test/stats          {"jwks_requests","token_requests"}
//
// No network at run time: it only listens on 127.0.0.1.

import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes, createSecretKey } from 'node:crypto';

import Provider, { interactionPolicy } from 'oidc-provider';
import { SignJWT, base64url } from 'jose';

// stdout carries the one "listening" line and nothing else: oidc-provider prints its
// notices with console.info, so every console method but error/warn is sent to stderr.
for (const method of ['log', 'info', 'debug']) {
  // eslint-disable-next-line no-console
  console[method] = (...args) => console.error(...args);
}

// ---------------------------------------------------------------------------------------
// Configuration from the environment.

const port = Number.parseInt(process.env.PORT ?? '0', 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`oidc.mjs: bad PORT ${process.env.PORT}`);
  process.exit(2);
}

let clients;
try {
  clients = JSON.parse(process.env.CLIENTS ?? '[]');
  if (!Array.isArray(clients)) throw new Error('CLIENTS must be a JSON array');
} catch (err) {
  console.error(`oidc.mjs: bad CLIENTS: ${err.message}`);
  process.exit(2);
}
// Defaults that kms's tests rely on: the code flow, refresh tokens allowed.
clients = clients.map((c) => ({
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  ...c,
}));

// ---------------------------------------------------------------------------------------
// Test state, changed through /__test/.

/** Users known by sub (findAccount answers from here), and who logs in next. */
const users = new Map();
let nextSub = 'alice';
users.set('alice', {
  sub: 'alice',
  email: 'alice@example.com',
  name: 'Alice',
  groups: ['admins'],
});

/** How the id_token of the next token responses is rewritten ("normal": not at all). */
const ID_TOKEN_MODES = new Set([
  'normal', 'alg_none', 'hs256', 'wrong_nonce', 'wrong_aud', 'expired', 'wrong_iss',
  'bad_signature',
]);
let idTokenMode = 'normal';

/** After POST /__test/revoke-refresh every refresh_token grant fails. */
let refreshRevoked = false;

const stats = { jwks_requests: 0, token_requests: 0 };

// ---------------------------------------------------------------------------------------
// Signing keys: one per algorithm (RS256 is the default; ES256 and EdDSA for clients whose
// id_token_signed_response_alg asks for them). Rotation replaces all three.

/** The current keys: [{ kid, alg, privateKey (KeyObject), jwk (private JWK) }]. */
let keys = [];

function newKeys() {
  const stamp = randomBytes(6).toString('hex');
  const specs = [
    { alg: 'RS256', type: 'rsa', options: { modulusLength: 2048 } },
    { alg: 'ES256', type: 'ec', options: { namedCurve: 'P-256' } },
    { alg: 'EdDSA', type: 'ed25519', options: {} },
  ];
  return specs.map(({ alg, type, options }) => {
    const { privateKey } = generateKeyPairSync(type, options);
    const kid = `${alg.toLowerCase()}-${stamp}`;
    const jwk = { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
    return { kid, alg, privateKey, jwk };
  });
}

// ---------------------------------------------------------------------------------------
// Storage shared by every Provider instance. oidc-provider's own memory adapter keeps one
// store per instance, and a key rotation builds a new instance: this adapter keeps
// sessions, interactions, codes, grants and tokens in one module-level store instead, so
// they survive a rotation. In memory only; gone when the process ends.

const store = new Map(); // "Model:id" -> { payload, expiresAt (ms) }
const grantMembers = new Map(); // grantId -> Set of "Model:id" issued under it
const sessionUids = new Map(); // Session uid -> id
const userCodes = new Map(); // device flow user code -> id
const GRANTABLE = new Set([
  'AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest',
]);

class SharedMemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    store.set(key, { payload, expiresAt });
    if (this.model === 'Session' && payload.uid) sessionUids.set(payload.uid, id);
    if (payload.userCode) userCodes.set(payload.userCode, id);
    if (payload.grantId && GRANTABLE.has(this.model)) {
      if (!grantMembers.has(payload.grantId)) grantMembers.set(payload.grantId, new Set());
      grantMembers.get(payload.grantId).add(key);
    }
  }

  async find(id) {
    const key = this.key(id);
    const entry = store.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      store.delete(key);
      return undefined;
    }
    return entry.payload;
  }

  async findByUid(uid) {
    const id = sessionUids.get(uid);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = userCodes.get(userCode);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const key of grantMembers.get(grantId) ?? []) store.delete(key);
    grantMembers.delete(grantId);
  }
}

// ---------------------------------------------------------------------------------------
// The provider. A new instance is built at start and on every key rotation; the instances
// share the storage above, the cookie keys and the clients, so sessions, codes, grants and
// refresh tokens survive a rotation.

const cookieKeys = [randomBytes(32).toString('hex')];
let issuer = '';

function claimsOf(sub) {
  const u = users.get(sub);
  if (!u) return undefined;
  const claims = { sub: u.sub };
  if (u.email !== undefined) {
    claims.email = u.email;
    claims.email_verified = true;
  }
  if (u.name !== undefined) claims.name = u.name;
  if (u.groups !== undefined) claims.groups = u.groups;
  return claims;
}

/** The login prompt, plus one check: the session's user is not the "next user". */
function interactions() {
  const policy = interactionPolicy.base();
  const login = policy.get('login');
  login.checks.add(
    new interactionPolicy.Check(
      'next_user_changed',
      'the test asked for another user than the session has',
      (ctx) => (ctx.oidc.session.accountId && ctx.oidc.session.accountId !== nextSub
        ? interactionPolicy.Check.REQUEST_PROMPT
        : interactionPolicy.Check.NO_NEED_TO_PROMPT),
    ),
  );
  return {
    policy,
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  };
}

function buildProvider() {
  const provider = new Provider(issuer, {
    adapter: SharedMemoryAdapter,
    clients,
    jwks: { keys: keys.map((k) => k.jwk) },
    cookies: { keys: cookieKeys },
    // The claims behind each scope.
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    // The scope claims in the ID token of the code flow too (by default oidc-provider
    // leaves them to userinfo).
    conformIdTokenClaims: false,
    // PKCE (S256) on every authorization request, confidential clients included.
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      introspection: { enabled: true },
    },
    interactions: interactions(),
    async findAccount(_ctx, sub) {
      if (!users.has(sub)) return undefined;
      return {
        accountId: sub,
        // oidc-provider keeps only what the granted scopes allow.
        claims: async () => claimsOf(sub),
      };
    },
    // Error pages as JSON, to read in the tests' logs.
    async renderError(ctx, out) {
      ctx.type = 'json';
      ctx.body = out;
    },
  });
  // Why a request failed, for the tests' logs (error_detail never reaches the client).
  provider.on('server_error', (_ctx, err) => console.error('oidc.mjs server_error:', err));
  for (const event of ['grant.error', 'authorization.error', 'userinfo.error']) {
    provider.on(event, (_ctx, err) => {
      console.error(`oidc.mjs ${event}: ${err.message} ${err.error_detail ?? ''}`);
    });
  }
  provider.use(refreshGate);
  provider.use(idTokenRewriter);
  return provider;
}

// ---------------------------------------------------------------------------------------
// Koa middleware around the token endpoint.

/** Refresh-token grants fail once revoke-refresh was called. */
async function refreshGate(ctx, next) {
  await next();
  if (!refreshRevoked || ctx.oidc?.route !== 'token') return;
  const grantType = ctx.oidc.params?.grant_type ?? ctx.oidc.body?.grant_type;
  if (grantType !== 'refresh_token') return;
  ctx.status = 400;
  ctx.type = 'json';
  ctx.body = {
    error: 'invalid_grant',
    error_description: 'refresh token revoked (test control)',
  };
}

/** Rewrites the id_token of token responses according to idTokenMode. */
async function idTokenRewriter(ctx, next) {
  await next();
  if (ctx.oidc?.route !== 'token' || ctx.status !== 200) return;
  const body = ctx.body;
  if (!body || typeof body !== 'object' || typeof body.id_token !== 'string') return;
  if (idTokenMode === 'normal') return;
  body.id_token = await rewriteIdToken(body.id_token, idTokenMode, ctx.oidc.client);
  ctx.body = body;
}

function decodePart(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

/** Signs `payload` with the current key of `header.alg` (or RS256), keeping its kid. */
async function signWithProviderKey(header, payload) {
  const key = keys.find((k) => k.alg === header.alg) ?? keys[0];
  return new SignJWT(payload)
    .setProtectedHeader({ ...header, alg: key.alg, kid: key.kid })
    .sign(key.privateKey);
}

async function rewriteIdToken(jwt, mode, client) {
  const [h, p] = jwt.split('.');
  const header = decodePart(h);
  const payload = decodePart(p);
  const now = Math.floor(Date.now() / 1000);
  switch (mode) {
    case 'alg_none': {
      const none = base64url.encode(JSON.stringify({ alg: 'none' }));
      return `${none}.${p}.`;
    }
    case 'hs256': {
      const secret = createSecretKey(Buffer.from(client?.clientSecret ?? '', 'utf8'));
      const { kid: _kid, ...rest } = header;
      return new SignJWT(payload).setProtectedHeader({ ...rest, alg: 'HS256' }).sign(secret);
    }
    case 'wrong_nonce':
      return signWithProviderKey(header, { ...payload, nonce: `wrong-${payload.nonce ?? 'nonce'}` });
    case 'wrong_aud':
      return signWithProviderKey(header, { ...payload, aud: 'someone-else', azp: undefined });
    case 'expired':
      return signWithProviderKey(header, { ...payload, iat: now - 7200, exp: now - 3600 });
    case 'wrong_iss':
      return signWithProviderKey(header, { ...payload, iss: `${issuer}/not-the-issuer` });
    case 'bad_signature': {
      const signed = await signWithProviderKey(header, payload);
      const [sh, sp, sig] = signed.split('.');
      const bytes = Buffer.from(sig, 'base64url');
      bytes[0] ^= 0xff;
      bytes[bytes.length - 1] ^= 0x01;
      return `${sh}.${sp}.${bytes.toString('base64url')}`;
    }
    default:
      return jwt;
  }
}

// ---------------------------------------------------------------------------------------
// The non-interactive interaction endpoint.

async function interaction(provider, req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    if (session?.accountId && session.accountId !== nextSub) {
      // The browser's session is another user's. oidc-provider would answer the resumed
      // authorization with a script-submitted logout form, which a test client does not
      // run: forget the session instead (detach it from the interaction, expire its
      // cookie), so that the resume starts a new session for the next user.
      delete details.session;
      await details.save(details.exp - Math.floor(Date.now() / 1000));
      const expired = 'path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT; samesite=lax; httponly';
      const name = provider.cookieName('session');
      res.setHeader('Set-Cookie', [`${name}=; ${expired}`, `${name}.sig=; ${expired}`]);
    }
    await provider.interactionFinished(
      req,
      res,
      { login: { accountId: nextSub } },
      { mergeWithLastSubmission: false },
    );
    return;
  }
  if (prompt.name === 'consent') {
    // Grant everything asked for: the requested OIDC scopes (offline_access included, so
    // that a refresh token is issued), claims and resource scopes.
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const requested = String(params.scope ?? '').split(' ').filter(Boolean);
    const missing = prompt.details.missingOIDCScope ?? [];
    grant.addOIDCScope([...new Set([...requested, ...missing])].join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    await provider.interactionFinished(
      req,
      res,
      { consent: { grantId } },
      { mergeWithLastSubmission: true },
    );
    return;
  }
  sendJson(res, 400, { error: `unexpected prompt ${prompt.name}` });
}

// ---------------------------------------------------------------------------------------
// The control API.

function sendJson(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(body);
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  return text.trim() === '' ? {} : JSON.parse(text);
}

async function control(path, req, res) {
  const method = req.method ?? 'GET';
  if (method === 'GET' && path === '/__test/stats') {
    sendJson(res, 200, stats);
    return;
  }
  if (method !== 'POST') {
    sendJson(res, 405, { error: 'method not allowed' });
    return;
  }
  let body;
  try {
    body = await readJson(req);
  } catch (err) {
    sendJson(res, 400, { error: `bad JSON: ${err.message}` });
    return;
  }
  switch (path) {
    case '/__test/next-user': {
      if (typeof body.sub !== 'string' || body.sub === '') {
        sendJson(res, 400, { error: 'sub (a non-empty string) is required' });
        return;
      }
      const user = { sub: body.sub };
      for (const k of ['email', 'name', 'groups']) {
        if (body[k] !== undefined && body[k] !== null) user[k] = body[k];
      }
      users.set(body.sub, user);
      nextSub = body.sub;
      sendJson(res, 200, { ok: true, next_user: user });
      return;
    }
    case '/__test/mode': {
      if (!ID_TOKEN_MODES.has(body.id_token)) {
        sendJson(res, 400, { error: `id_token must be one of ${[...ID_TOKEN_MODES].join(', ')}` });
        return;
      }
      idTokenMode = body.id_token;
      sendJson(res, 200, { ok: true, id_token: idTokenMode });
      return;
    }
    case '/__test/rotate-keys': {
      keys = newKeys();
      current = buildProvider();
      handler = current.callback();
      sendJson(res, 200, { ok: true, kids: keys.map((k) => k.kid) });
      return;
    }
    case '/__test/revoke-refresh': {
      refreshRevoked = true;
      sendJson(res, 200, { ok: true });
      return;
    }
    default:
      sendJson(res, 404, { error: 'unknown control endpoint' });
  }
}

// ---------------------------------------------------------------------------------------
// The HTTP server: control API and interactions here, the rest to the current provider.

let current;
let handler;

const server = createServer((req, res) => {
  const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
  if (path === '/jwks') stats.jwks_requests += 1;
  if (path === '/token') stats.token_requests += 1;
  const done = (err) => {
    console.error('oidc.mjs:', err);
    if (!res.headersSent) sendJson(res, 500, { error: String(err?.message ?? err) });
    else res.end();
  };
  if (path.startsWith('/__test/')) {
    control(path, req, res).catch(done);
  } else if (path.startsWith('/interaction/')) {
    interaction(current, req, res).catch(done);
  } else {
    handler(req, res);
  }
});

server.listen(port, '127.0.0.1', () => {
  const actual = server.address().port;
  issuer = `http://127.0.0.1:${actual}`;
  keys = newKeys();
  current = buildProvider();
  handler = current.callback();
  process.stdout.write(`${JSON.stringify({ issuer, port: actual })}\n`);
});

// The test harness kills the process; exit quietly on the usual signals too.
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
