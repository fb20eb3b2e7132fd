// Every call to the Tempo API goes through here: same origin, the cookie sent by the
// browser, JSON in and out, and problem+json errors turned into ApiError.

const unauthorizedListeners = new Set();

export class ApiError extends Error {
  constructor(status, message, { code = '', retryAfter = null } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export function onUnauthorized(listener) {
  unauthorizedListeners.add(listener);
}

function announceUnauthorized(error) {
  for (const listener of unauthorizedListeners) listener(error);
}

const FALLBACK_MESSAGES = {
  0: 'The server could not be reached. Check your connection and try again.',
  400: 'The request was not accepted.',
  401: 'Please sign in.',
  403: 'That is not allowed.',
  404: 'Not found.',
  409: 'That conflicts with something that already exists.',
  413: 'That is larger than the server accepts.',
  415: 'That type of file is not accepted.',
  429: 'Too many attempts. Please wait and try again.',
  502: 'Tempo is not answering right now. Try again in a moment.',
  503: 'Tempo is busy right now. Try again in a moment.',
  504: 'Tempo took too long to answer. Try again in a moment.',
};

function fallbackMessage(status) {
  if (status in FALLBACK_MESSAGES) return FALLBACK_MESSAGES[status];
  return status >= 500 ? 'Something went wrong on the server. Try again later.'
    : 'The request was not accepted.';
}

// Seconds until a Retry-After header (delta-seconds or an HTTP date) allows another try.
export function parseRetryAfter(value, now = Date.now()) {
  if (value === null || value === undefined || value === '') return null;
  const text = String(value).trim();
  if (/^\d+$/.test(text)) return Number(text);
  const when = Date.parse(text);
  if (Number.isNaN(when)) return null;
  return Math.max(0, Math.ceil((when - now) / 1000));
}

function parseBody(text, contentType) {
  if (!text) return null;
  if (contentType && /json/i.test(contentType)) {
    try {
      return JSON.parse(text);
    } catch {
      return null;
    }
  }
  return null;
}

// The human message of a problem+json body (Tempo's clients read `error`).
export function messageOf(body, status) {
  if (body && typeof body === 'object') {
    for (const key of ['error', 'detail', 'message', 'title']) {
      if (typeof body[key] === 'string' && body[key].trim()) return body[key];
    }
  }
  return fallbackMessage(status);
}

function errorFrom(status, body, retryAfterHeader) {
  return new ApiError(status, messageOf(body, status), {
    code: body && typeof body.code === 'string' ? body.code : '',
    retryAfter: parseRetryAfter(retryAfterHeader),
  });
}

/**
 * Calls the API. `expectUnauthorized` is for the calls where 401 is an answer about the
 * credentials just typed (sign in, current password), not about the session.
 */
export async function api(path, { method = 'GET', json, expectUnauthorized = false } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (json !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, fallbackMessage(0));
  }
  const text = await response.text().catch(() => '');
  const body = parseBody(text, response.headers.get('Content-Type'));
  if (!response.ok) {
    const error = errorFrom(response.status, body, response.headers.get('Retry-After'));
    if (response.status === 401 && !expectUnauthorized) announceUnauthorized(error);
    throw error;
  }
  return body;
}

/**
 * Posts a form with XMLHttpRequest, the one browser API that reports upload progress.
 * Resolves with the parsed body; rejects with ApiError.
 */
export function uploadForm(path, formData, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open('POST', path);
    request.withCredentials = true;
    request.setRequestHeader('Accept', 'application/json');
    request.upload.addEventListener('progress', (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    request.upload.addEventListener('load', () => onProgress(1, 1));
    request.addEventListener('load', () => {
      const body = parseBody(request.responseText, request.getResponseHeader('Content-Type'));
      if (request.status >= 200 && request.status < 300) {
        resolve(body);
        return;
      }
      const error = errorFrom(request.status, body, request.getResponseHeader('Retry-After'));
      if (request.status === 401) announceUnauthorized(error);
      reject(error);
    });
    const failed = () => reject(new ApiError(0,
      'The upload was interrupted. The file may be larger than the server accepts, '
      + 'or the connection was lost.'));
    request.addEventListener('error', failed);
    request.addEventListener('abort', failed);
    request.addEventListener('timeout', failed);
    request.send(formData);
  });
}
