// Plays a person's browser against provider.mjs with plain HTTP: a cookie jar,
// redirects followed by hand, and each page's first form submitted.
//
//   node browser.mjs authorize <authorization-url> <user> [--deny]
//   node browser.mjs device <verification-uri[-complete]> <user-code> <user> [--deny]
//
// `authorize` signs in as <user> (consenting to everything asked), follows the
// redirects to the client's loopback redirect URI and GETs it, so the CLI's
// listener receives the code; it prints `callback <status> <url>`.
// `device` enters or confirms the user code, signs in, and prints
// `device signed in`. --deny declines at the sign-in form instead (the client
// then gets access_denied); `device` then prints `device denied: <reason>`.
// The password, when the user has one, is read from the IDP_USERS file;
// IDP_PASSWORD overrides it. Exits 1 with the reason when a step fails.
import fs from 'node:fs';

const [mode, start, ...rest] = process.argv.slice(2);
const deny = rest.includes('--deny');
const args = rest.filter((a) => a !== '--deny');
const [userCode, user] = mode === 'device' ? args : [undefined, args[0]];
if (!['authorize', 'device'].includes(mode) || !start || !user) {
  console.error('usage: node browser.mjs authorize <url> <user> [--deny]\n'
    + '       node browser.mjs device <verification-uri> <user-code> <user> [--deny]');
  process.exit(2);
}

function fail(msg) {
  console.error(`browser: ${msg}`);
  process.exit(1);
}

function password() {
  if (process.env.IDP_PASSWORD !== undefined) return process.env.IDP_PASSWORD;
  const file = process.env.IDP_USERS;
  return file ? JSON.parse(fs.readFileSync(file, 'utf8'))[user]?.password ?? '' : '';
}

// Cookies by origin; every cookie goes back to its origin whatever its path,
// which is enough for one provider (its cookie names do not repeat across paths).
const jar = new Map();
const idp = new URL(start).origin;

function remember(url, res) {
  const cookies = jar.get(url.origin) ?? new Map();
  // getSetCookie is missing from older Node fetch; then split the joined
  // header at each comma that starts a new `name=` (not the one in Expires).
  const lines = res.headers.getSetCookie?.()
    ?? (res.headers.get('set-cookie') ?? '').split(/,(?=\s*[\w.-]+=)/).filter(Boolean);
  for (const line of lines) {
    const [pair, ...attrs] = line.split(';');
    const eq = pair.indexOf('=');
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    const expired = attrs.some((a) => /^\s*expires=/i.test(a) && Date.parse(a.split('=')[1]) < Date.now())
      || attrs.some((a) => /^\s*max-age=\s*0\s*$/i.test(a));
    if (expired || value === '') cookies.delete(name);
    else cookies.set(name, value);
  }
  jar.set(url.origin, cookies);
}

async function request(url, form) {
  const headers = {};
  const cookies = jar.get(url.origin);
  if (cookies?.size) headers.cookie = [...cookies].map(([n, v]) => `${n}=${v}`).join('; ');
  const init = { headers, redirect: 'manual' };
  if (form) {
    init.method = 'POST';
    headers['content-type'] = 'application/x-www-form-urlencoded';
    init.body = new URLSearchParams(form).toString();
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch (err) {
    fail(`${init.method ?? 'GET'} ${url}: ${err.cause?.message ?? err.message}`);
  }
  remember(url, res);
  return res;
}

const unescape = (s) => s.replace(/&(amp|lt|gt|quot|#(\d+));/g, (m, name, code) => (
  code ? String.fromCharCode(Number(code)) : {
    amp: '&', lt: '<', gt: '>', quot: '"',
  }[name]));

function attrs(tag) {
  const out = {};
  for (const [, name, value] of tag.matchAll(/([\w-]+)\s*=\s*"([^"]*)"/g)) out[name.toLowerCase()] = unescape(value);
  return out;
}

// The first form on the page: its action and its fields, filled in for us.
function firstForm(body, base) {
  const found = body.match(/<form([^>]*)>([\s\S]*?)<\/form>/i);
  if (!found) return undefined;
  const { action = base.href } = attrs(found[1]);
  const fields = {};
  for (const [input] of found[2].matchAll(/<input[^>]*>/gi)) {
    const { name, value = '' } = attrs(input);
    if (name) fields[name] = value;
  }
  const target = new URL(action, base);
  if (/^\/interaction\//.test(target.pathname)) {
    if (deny) return { target, fields: { abort: '1' } };
    Object.assign(fields, { login: user, password: password() });
  } else if ('user_code' in fields && !fields.user_code) {
    fields.user_code = userCode;
  }
  return { target, fields };
}

let url = new URL(start);
let form;
for (let step = 0; step < 30; step += 1) {
  // The redirect back to the client (any origin but the provider's) ends the walk.
  if (mode === 'authorize' && url.origin !== idp) {
    const res = await request(url);
    console.log(`callback ${res.status} ${url.href}`);
    process.exit(0);
  }
  const res = await request(url, form);
  const body = await res.text();
  if (res.status >= 300 && res.status < 400) {
    url = new URL(res.headers.get('location'), url);
    form = undefined;
    continue;
  }
  if (res.status !== 200) fail(`${form ? 'POST' : 'GET'} ${url.href}: ${res.status} ${body.trim()}`);
  if (mode === 'device' && /Sign-in success/.test(body)) {
    console.log('device signed in');
    process.exit(0);
  }
  // provider.mjs shows the code form again with the reason (a wrong or used
  // code, or the sign-in declined).
  const shown = body.match(/<p>error: ([^<]*)<\/p>/);
  if (mode === 'device' && shown) {
    if (!deny) fail(`${url.href}: ${unescape(shown[1])}`);
    console.log(`device denied: ${unescape(shown[1])}`);
    process.exit(0);
  }
  const next = firstForm(body, url);
  if (!next) fail(`${url.href}: a page with no form: ${body.trim().slice(0, 500)}`);
  ({ target: url, fields: form } = next);
}
fail('more than 30 steps');
