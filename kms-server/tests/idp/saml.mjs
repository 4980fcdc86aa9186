// A SAML 2.0 identity provider (on samlify) for kms-server's end-to-end tests, started by
// the tests on loopback (kms-server/tests/common/idp.rs).
//
//   PORT=0 node saml.mjs
//
// Prints exactly one line on stdout once it listens:
//   {"base":"http://127.0.0.1:PORT","metadata_url":"http://127.0.0.1:PORT/metadata","port":PORT}
//
// Endpoints:
//   GET  /metadata           IdP metadata: entity id http://127.0.0.1:PORT/metadata, the
//                            signing certificate (saml-idp-cert.pem, a fixed test-only key
//                            pair committed beside this file), SingleSignOnService with the
//                            HTTP-Redirect (and HTTP-POST) binding at /sso
//   GET  /sso?SAMLRequest=&RelayState=   (HTTP-Redirect binding; POST /sso: HTTP-POST)
//                            answers an HTML page with <form method="post" action="ACS">
//                            and hidden SAMLResponse and RelayState (auto-submitted by a
//                            script in a browser), for the "next user"
//
// Control API, plain JSON (see README.md beside this file):
//   POST /__test/sp             {"metadata_xml"}: registers an SP (entity id, ACS)
//   POST /__test/next-user      {"name_id","email","name","groups"?}
//   POST /__test/mode           {"response": mode, "sign_response"?: bool}
//   POST /__test/idp-initiated  {"acs", "audience"?, "relay_state"?} -> {"SAMLResponse"}
//   GET  /__test/last-response  {"SAMLResponse","RelayState"}
//
// No network at run time: it only listens on 127.0.0.1.

import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { inflateRawSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

import samlify from 'samlify';
import { DOMParser } from '@xmldom/xmldom';

// stdout carries the one "listening" line and nothing else.
for (const method of ['log', 'info', 'debug']) {
  console[method] = (...args) => console.error(...args);
}

const here = dirname(fileURLToPath(import.meta.url));
const keyPem = readFileSync(join(here, 'saml-idp-key.pem'), 'utf8');
const certPem = readFileSync(join(here, 'saml-idp-cert.pem'), 'utf8');

// samlify refuses to parse any message without a schema validator. This IdP is a test
// fixture that parses only the AuthnRequests of the SP under test, so its validator only
// checks that the XML is well-formed (xmldom, errors fatal); it does NOT validate against
// the SAML schemas. Checking what kms receives is kms's job, not this fixture's.
samlify.setSchemaValidator({
  validate: async (xml) => {
    parseXml(xml);
    return 'well-formed (no schema validation: test fixture)';
  },
});

const NS = {
  protocol: 'urn:oasis:names:tc:SAML:2.0:protocol',
  assertion: 'urn:oasis:names:tc:SAML:2.0:assertion',
  metadata: 'urn:oasis:names:tc:SAML:2.0:metadata',
  dsig: 'http://www.w3.org/2000/09/xmldsig#',
};
const BINDING = {
  redirect: 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect',
  post: 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST',
};
const EMAIL_FORMAT = 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress';

function parseXml(xml) {
  const fail = (msg) => {
    throw new Error(`XML: ${msg}`);
  };
  return new DOMParser({ errorHandler: { error: fail, fatalError: fail } })
    .parseFromString(xml, 'text/xml');
}

// ---------------------------------------------------------------------------------------
// Configuration and test state.

const port = Number.parseInt(process.env.PORT ?? '0', 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`saml.mjs: bad PORT ${process.env.PORT}`);
  process.exit(2);
}

/** Registered SPs by entity id: { entityId, acs: [POST ACS locations], sp (samlify) }. */
const sps = new Map();
let lastSp;

let nextUser = { name_id: 'alice@example.com', email: 'alice@example.com', name: 'Alice', groups: ['admins'] };

const MODES = new Set([
  'normal', 'unsigned_assertion', 'altered_name_id', 'wrapped_signature',
  'wrapped_signature_extensions', 'expired', 'wrong_audience', 'wrong_in_response_to',
  'not_yet_valid',
]);
let mode = 'normal';
/** Also sign the Response (the Assertion is signed in every mode but unsigned_assertion). */
let signResponse = false;

let lastResponse = null;

let base = '';
let idp;

// ---------------------------------------------------------------------------------------
// Service providers.

/** Reads entity id and HTTP-POST ACS locations from SP metadata. */
function readSpMetadata(xml) {
  const doc = parseXml(xml);
  const entity = doc.getElementsByTagNameNS(NS.metadata, 'EntityDescriptor')[0];
  if (!entity) throw new Error('no md:EntityDescriptor');
  const entityId = entity.getAttribute('entityID');
  if (!entityId) throw new Error('no entityID');
  const acs = [];
  const nodes = doc.getElementsByTagNameNS(NS.metadata, 'AssertionConsumerService');
  for (let i = 0; i < nodes.length; i += 1) {
    const n = nodes[i];
    if (n.getAttribute('Binding') === BINDING.post && n.getAttribute('Location')) {
      acs.push(n.getAttribute('Location'));
    }
  }
  if (acs.length === 0) throw new Error('no AssertionConsumerService with the HTTP-POST binding');
  return { entityId, acs };
}

function registerSp(entityId, acs, metadataXml) {
  const sp = metadataXml
    ? samlify.ServiceProvider({ metadata: metadataXml })
    : samlify.ServiceProvider({
      entityID: entityId,
      assertionConsumerService: acs.map((Location) => ({ Binding: BINDING.post, Location })),
    });
  const entry = { entityId, acs, sp, fromMetadata: Boolean(metadataXml) };
  sps.set(entityId, entry);
  lastSp = entry;
  return entry;
}

// ---------------------------------------------------------------------------------------
// Building responses.

function newId() {
  return `_${randomBytes(16).toString('hex')}`;
}

function esc(s) {
  return String(s)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

function iso(ms) {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function attribute(name, values) {
  const vals = values
    .map((v) => `<saml:AttributeValue xsi:type="xs:string">${esc(v)}</saml:AttributeValue>`)
    .join('');
  return `<saml:Attribute Name="${esc(name)}" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic">${vals}</saml:Attribute>`;
}

/**
 * The XML of a Response for `user` to the SP `audience` at `acs`, with the current mode's
 * times, audience and InResponseTo (inResponseTo null: unsolicited).
 */
function responseXml({ user, audience, acs, inResponseTo }) {
  const now = Date.now();
  const hour = 3600 * 1000;
  let issueInstant = now;
  let notBefore = now - 60 * 1000;
  let notOnOrAfter = now + 5 * 60 * 1000;
  let aud = audience;
  let irt = inResponseTo;
  switch (mode) {
    case 'expired':
      issueInstant = now - hour - 5 * 60 * 1000;
      notBefore = issueInstant - 60 * 1000;
      notOnOrAfter = now - hour;
      break;
    case 'not_yet_valid':
      notBefore = now + hour;
      notOnOrAfter = now + hour + 5 * 60 * 1000;
      break;
    case 'wrong_audience':
      aud = 'https://not-the-sp.example.com/saml/metadata';
      break;
    case 'wrong_in_response_to':
      irt = newId();
      break;
    default:
      break;
  }
  const irtAttr = irt ? ` InResponseTo="${esc(irt)}"` : '';
  const attrs = [];
  if (user.email !== undefined) attrs.push(attribute('email', [user.email]));
  if (user.name !== undefined) attrs.push(attribute('name', [user.name]));
  if (user.groups !== undefined) attrs.push(attribute('groups', user.groups));
  const issuer = `<saml:Issuer>${esc(idp.entityMeta.getEntityID())}</saml:Issuer>`;
  const assertion = `<saml:Assertion xmlns:saml="${NS.assertion}" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ID="${newId()}" Version="2.0" IssueInstant="${iso(issueInstant)}">`
    + issuer
    + '<saml:Subject>'
    + `<saml:NameID Format="${EMAIL_FORMAT}">${esc(user.name_id)}</saml:NameID>`
    + '<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer">'
    + `<saml:SubjectConfirmationData NotOnOrAfter="${iso(notOnOrAfter)}" Recipient="${esc(acs)}"${irtAttr}/>`
    + '</saml:SubjectConfirmation>'
    + '</saml:Subject>'
    + `<saml:Conditions NotBefore="${iso(notBefore)}" NotOnOrAfter="${iso(notOnOrAfter)}">`
    + `<saml:AudienceRestriction><saml:Audience>${esc(aud)}</saml:Audience></saml:AudienceRestriction>`
    + '</saml:Conditions>'
    + `<saml:AuthnStatement AuthnInstant="${iso(issueInstant)}" SessionIndex="${newId()}">`
    + '<saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext>'
    + '</saml:AuthnStatement>'
    + `<saml:AttributeStatement>${attrs.join('')}</saml:AttributeStatement>`
    + '</saml:Assertion>';
  return `<samlp:Response xmlns:samlp="${NS.protocol}" xmlns:saml="${NS.assertion}" ID="${newId()}" Version="2.0" IssueInstant="${iso(issueInstant)}" Destination="${esc(acs)}"${irtAttr}>`
    + issuer
    + `<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>`
    + assertion
    + '</samlp:Response>';
}

/** Enveloped RSA-SHA256 signature (exclusive c14n) of the Assertion, after its Issuer. */
function signAssertion(xml) {
  return samlify.SamlLib.constructSAMLSignature({
    rawSamlMessage: xml,
    referenceTagXPath: "/*[local-name(.)='Response']/*[local-name(.)='Assertion']",
    privateKey: keyPem,
    signingCert: idp.entityMeta.getX509Certificate('signing'),
    signatureConfig: {
      prefix: 'ds',
      location: {
        reference: "/*[local-name(.)='Response']/*[local-name(.)='Assertion']/*[local-name(.)='Issuer']",
        action: 'after',
      },
    },
    isBase64Output: false,
  });
}

/** Enveloped signature of the whole Response, after its Issuer. */
function signWholeResponse(xml) {
  return samlify.SamlLib.constructSAMLSignature({
    rawSamlMessage: xml,
    referenceTagXPath: "/*[local-name(.)='Response']",
    privateKey: keyPem,
    signingCert: idp.entityMeta.getX509Certificate('signing'),
    signatureConfig: {
      prefix: 'ds',
      location: { reference: "/*[local-name(.)='Response']/*[local-name(.)='Issuer']", action: 'after' },
    },
    isBase64Output: false,
  });
}

const EVIL = 'mallory@evil.example.com';

/** The first element child of `parent` named `local` in namespace `ns`. */
function child(parent, ns, local) {
  for (let n = parent.firstChild; n; n = n.nextSibling) {
    if (n.nodeType === 1 && n.namespaceURI === ns && n.localName === local) return n;
  }
  return null;
}

/** A copy of the signed Assertion `signed` without its Signature, for another user. */
function evilCopy(doc, signed) {
  const evil = signed.cloneNode(true);
  const sig = child(evil, NS.dsig, 'Signature');
  if (sig) evil.removeChild(sig);
  evil.setAttribute('ID', newId());
  const nameId = evil.getElementsByTagNameNS(NS.assertion, 'NameID')[0];
  nameId.textContent = EVIL;
  const attrs = evil.getElementsByTagNameNS(NS.assertion, 'Attribute');
  for (let i = 0; i < attrs.length; i += 1) {
    if (attrs[i].getAttribute('Name') === 'email') {
      attrs[i].getElementsByTagNameNS(NS.assertion, 'AttributeValue')[0].textContent = EVIL;
    }
  }
  return evil;
}

/** Applies the tampering of the current mode to the signed XML. */
function tamper(xml) {
  if (mode === 'altered_name_id') {
    // Sign, then change the NameID text: the Assertion's digest no longer matches.
    const doc = parseXml(xml);
    doc.getElementsByTagNameNS(NS.assertion, 'NameID')[0].textContent = EVIL;
    return doc.toString();
  }
  if (mode === 'wrapped_signature') {
    // XSW: an evil unsigned Assertion (another NameID) before the untouched signed one.
    // Its signature still verifies; an SP that then reads "the first Assertion" is fooled.
    const doc = parseXml(xml);
    const response = doc.documentElement;
    const signed = child(response, NS.assertion, 'Assertion');
    response.insertBefore(evilCopy(doc, signed), signed);
    return doc.toString();
  }
  if (mode === 'wrapped_signature_extensions') {
    // XSW: the signed Assertion moved into samlp:Extensions (still verifies by its ID),
    // an evil unsigned copy in its place.
    const doc = parseXml(xml);
    const response = doc.documentElement;
    const signed = child(response, NS.assertion, 'Assertion');
    const evil = evilCopy(doc, signed);
    response.replaceChild(evil, signed);
    const ext = doc.createElementNS(NS.protocol, 'samlp:Extensions');
    ext.appendChild(signed);
    response.insertBefore(ext, child(response, NS.protocol, 'Status'));
    return doc.toString();
  }
  return xml;
}

/** A base64 SAMLResponse for the next user, in the current mode. */
function buildResponse({ audience, acs, inResponseTo }) {
  let xml = responseXml({ user: nextUser, audience, acs, inResponseTo });
  if (mode !== 'unsigned_assertion') {
    xml = signAssertion(xml);
    if (signResponse) xml = signWholeResponse(xml);
  }
  xml = tamper(xml);
  return Buffer.from(xml, 'utf8').toString('base64');
}

// ---------------------------------------------------------------------------------------
// The SSO endpoint.

/** Issuer and ACS URL of an AuthnRequest's XML. */
function readAuthnRequest(xml) {
  const doc = parseXml(xml);
  const req = doc.documentElement;
  if (!req || req.localName !== 'AuthnRequest' || req.namespaceURI !== NS.protocol) {
    throw new Error('not a samlp:AuthnRequest');
  }
  const issuer = child(req, NS.assertion, 'Issuer');
  return {
    id: req.getAttribute('ID'),
    issuer: issuer ? issuer.textContent.trim() : '',
    acs: req.getAttribute('AssertionConsumerServiceURL') || '',
  };
}

function formPage(acs, samlResponse, relayState) {
  const relay = relayState === undefined || relayState === null
    ? ''
    : `<input type="hidden" name="RelayState" value="${esc(relayState)}"/>`;
  return '<!DOCTYPE html><html><head><meta charset="utf-8"><title>SAML</title></head>'
    + '<body onload="document.forms[0].submit()">'
    + `<form method="post" action="${esc(acs)}">`
    + `<input type="hidden" name="SAMLResponse" value="${esc(samlResponse)}"/>`
    + relay
    + '<noscript><button type="submit">Continue</button></noscript>'
    + '</form></body></html>';
}

async function sso(req, res, url) {
  let binding;
  let samlRequest;
  let relayState;
  let xml;
  if (req.method === 'GET') {
    binding = 'redirect';
    samlRequest = url.searchParams.get('SAMLRequest');
    relayState = url.searchParams.get('RelayState') ?? undefined;
    if (!samlRequest) return sendJson(res, 400, { error: 'SAMLRequest missing' });
    // A '+' of the base64 that the SP did not percent-encode reads as a space here.
    samlRequest = samlRequest.replace(/ /g, '+');
    xml = inflateRawSync(Buffer.from(samlRequest, 'base64')).toString('utf8');
  } else if (req.method === 'POST') {
    binding = 'post';
    const form = new URLSearchParams((await readBody(req)).toString('utf8'));
    samlRequest = form.get('SAMLRequest');
    relayState = form.get('RelayState') ?? undefined;
    if (!samlRequest) return sendJson(res, 400, { error: 'SAMLRequest missing' });
    samlRequest = samlRequest.replace(/ /g, '+');
    xml = Buffer.from(samlRequest, 'base64').toString('utf8');
  } else {
    return sendJson(res, 405, { error: 'method not allowed' });
  }
  const info = readAuthnRequest(xml);
  // The SP: registered by its metadata, else learnt from the request (issuer + ACS URL).
  let entry = sps.get(info.issuer);
  if (!entry) {
    if (!info.issuer || !info.acs) {
      return sendJson(res, 400, {
        error: `unknown SP ${JSON.stringify(info.issuer)} and no AssertionConsumerServiceURL to learn it from`,
      });
    }
    entry = registerSp(info.issuer, [info.acs], null);
  }
  if (info.acs && !entry.acs.includes(info.acs)) {
    if (entry.fromMetadata) {
      return sendJson(res, 400, { error: `ACS ${info.acs} is not in the SP's metadata` });
    }
    entry.acs.push(info.acs);
  }
  // samlify parses and checks the request (unsigned requests are accepted: the metadata
  // says WantAuthnRequestsSigned="false").
  const parsed = await idp.parseLoginRequest(
    entry.sp,
    binding,
    binding === 'redirect'
      ? { query: { SAMLRequest: samlRequest, RelayState: relayState } }
      : { body: { SAMLRequest: samlRequest, RelayState: relayState } },
  );
  const requestId = parsed.extract?.request?.id ?? info.id;
  const acs = info.acs || entry.acs[0];
  const SAMLResponse = buildResponse({ audience: entry.entityId, acs, inResponseTo: requestId });
  lastResponse = { SAMLResponse, RelayState: relayState ?? '' };
  const html = formPage(acs, SAMLResponse, relayState);
  res.writeHead(200, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(html),
    'cache-control': 'no-store',
  });
  res.end(html);
  return undefined;
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

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function control(path, req, res) {
  if (req.method === 'GET' && path === '/__test/last-response') {
    if (!lastResponse) return sendJson(res, 404, { error: 'no response yet' });
    return sendJson(res, 200, lastResponse);
  }
  if (req.method !== 'POST') return sendJson(res, 405, { error: 'method not allowed' });
  let body;
  try {
    const text = (await readBody(req)).toString('utf8');
    body = text.trim() === '' ? {} : JSON.parse(text);
  } catch (err) {
    return sendJson(res, 400, { error: `bad JSON: ${err.message}` });
  }
  switch (path) {
    case '/__test/sp': {
      if (typeof body.metadata_xml !== 'string') {
        return sendJson(res, 400, { error: 'metadata_xml (a string) is required' });
      }
      let meta;
      try {
        meta = readSpMetadata(body.metadata_xml);
      } catch (err) {
        return sendJson(res, 400, { error: `bad SP metadata: ${err.message}` });
      }
      registerSp(meta.entityId, meta.acs, body.metadata_xml);
      return sendJson(res, 200, { ok: true, entity_id: meta.entityId, acs: meta.acs });
    }
    case '/__test/next-user': {
      if (typeof body.name_id !== 'string' || body.name_id === '') {
        return sendJson(res, 400, { error: 'name_id (a non-empty string) is required' });
      }
      const user = { name_id: body.name_id };
      for (const k of ['email', 'name', 'groups']) {
        if (body[k] !== undefined && body[k] !== null) user[k] = body[k];
      }
      if (user.groups !== undefined && !Array.isArray(user.groups)) {
        return sendJson(res, 400, { error: 'groups must be an array' });
      }
      nextUser = user;
      return sendJson(res, 200, { ok: true, next_user: user });
    }
    case '/__test/mode': {
      if (body.response !== undefined) {
        if (!MODES.has(body.response)) {
          return sendJson(res, 400, { error: `response must be one of ${[...MODES].join(', ')}` });
        }
        mode = body.response;
      }
      if (body.sign_response !== undefined) signResponse = Boolean(body.sign_response);
      return sendJson(res, 200, { ok: true, response: mode, sign_response: signResponse });
    }
    case '/__test/idp-initiated': {
      if (typeof body.acs !== 'string' || body.acs === '') {
        return sendJson(res, 400, { error: 'acs (a string) is required' });
      }
      // The audience: given, else the SP whose ACS this is, else the last registered SP.
      let audience = body.audience;
      if (!audience) {
        const owner = [...sps.values()].find((e) => e.acs.includes(body.acs)) ?? lastSp;
        audience = owner ? owner.entityId : body.acs;
      }
      const SAMLResponse = buildResponse({ audience, acs: body.acs, inResponseTo: null });
      lastResponse = { SAMLResponse, RelayState: body.relay_state ?? '' };
      return sendJson(res, 200, { SAMLResponse });
    }
    default:
      return sendJson(res, 404, { error: 'unknown control endpoint' });
  }
}

// ---------------------------------------------------------------------------------------
// The HTTP server.

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://127.0.0.1');
  const fail = (err) => {
    console.error('saml.mjs:', err);
    if (!res.headersSent) sendJson(res, 400, { error: String(err?.message ?? err) });
    else res.end();
  };
  if (url.pathname.startsWith('/__test/')) {
    control(url.pathname, req, res).catch(fail);
  } else if (url.pathname === '/sso') {
    sso(req, res, url).catch(fail);
  } else if (url.pathname === '/metadata' && req.method === 'GET') {
    const xml = idp.getMetadata();
    res.writeHead(200, {
      'content-type': 'application/samlmetadata+xml',
      'content-length': Buffer.byteLength(xml),
    });
    res.end(xml);
  } else {
    sendJson(res, 404, { error: 'not found' });
  }
});

server.listen(port, '127.0.0.1', () => {
  const actual = server.address().port;
  base = `http://127.0.0.1:${actual}`;
  idp = samlify.IdentityProvider({
    entityID: `${base}/metadata`,
    signingCert: certPem,
    privateKey: keyPem,
    wantAuthnRequestsSigned: false,
    nameIDFormat: [EMAIL_FORMAT],
    singleSignOnService: [
      { Binding: BINDING.redirect, Location: `${base}/sso` },
      { Binding: BINDING.post, Location: `${base}/sso` },
    ],
  });
  process.stdout.write(
    `${JSON.stringify({ base, metadata_url: `${base}/metadata`, port: actual })}\n`,
  );
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
