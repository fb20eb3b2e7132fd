// Account: password change, the signed-in devices, the security activity, data export
// and sign-out.
import { api } from './api.js';
import { $, clear, el, formatDate, say } from './dom.js';
import { describeError } from './auth.js';

function listOf(body) {
  if (Array.isArray(body)) return body;
  if (body && Array.isArray(body.sessions)) return body.sessions;
  if (body && Array.isArray(body.items)) return body.items;
  return [];
}

// A readable name for a user agent string: "Chrome on Linux".
export function describeDevice(userAgent) {
  const ua = String(userAgent || '');
  if (!ua) return 'Unknown device';
  const browsers = [
    [/Edg\//, 'Edge'], [/OPR\/|Opera/, 'Opera'], [/Firefox\//, 'Firefox'],
    [/HeadlessChrome|Chromium\//, 'Chromium'], [/Chrome\//, 'Chrome'],
    [/Safari\//, 'Safari'], [/curl\//, 'curl'], [/python/i, 'Python'],
  ];
  const systems = [
    [/Android/, 'Android'], [/iPhone|iPad|iOS/, 'iOS'], [/Windows/, 'Windows'],
    [/Mac OS X|Macintosh/, 'macOS'], [/CrOS/, 'ChromeOS'], [/Linux/, 'Linux'],
  ];
  const browser = (browsers.find(([pattern]) => pattern.test(ua)) || [null, ''])[1];
  const system = (systems.find(([pattern]) => pattern.test(ua)) || [null, ''])[1];
  if (browser && system) return `${browser} on ${system}`;
  return browser || system || ua.slice(0, 60);
}

const AUDIT_PAGE_SIZE = 20;

// What each recorded action is called on the page; unknown ones show their own name.
const AUDIT_ACTIONS = {
  register: 'Account created',
  login: 'Sign-in',
  lockout: 'Sign-ins paused after repeated failures',
  logout: 'Signed out',
  password_change: 'Password changed',
  session_revoke: 'Device signed out',
  admin_password_reset: 'Password reset by the administrator',
  secrets_rotate: 'Server keys rotated',
  backup: 'Server backup',
  restore: 'Server restored from a backup',
  media_delete: 'Photo or video deleted',
  export: 'Data exported',
  import_start: 'Import started',
  import_end: 'Import ended',
  fsck_repair: 'Storage check repaired',
};

const AUDIT_OUTCOMES = {
  success: '', failure: 'failed', refused: 'refused', not_found: 'not found',
  cancelled: 'cancelled',
};

// A failed or refused sign-in is what an owner most needs to notice.
export function isAlert(record) {
  return (record.action === 'login' && record.outcome !== 'success') || record.action === 'lockout';
}

export function describeAudit(record) {
  const action = AUDIT_ACTIONS[record.action] || String(record.action || 'Event');
  const outcome = record.outcome in AUDIT_OUTCOMES ? AUDIT_OUTCOMES[record.outcome] : String(record.outcome || '');
  return { action, outcome };
}

export function initAccount(app) {
  const usernameNode = $('account-username');
  const passwordForm = $('password-form');
  const passwordError = $('password-error');
  const passwordSuccess = $('password-success');
  const sessionsList = $('sessions-list');
  const sessionsError = $('sessions-error');
  const sessionsStatus = $('sessions-status');
  const signoutButton = $('signout-button');
  const auditList = $('audit-list');
  const auditError = $('audit-error');
  const auditMore = $('audit-more');
  let auditCursor = null;

  function auditItem(record) {
    const { action, outcome } = describeAudit(record);
    const alert = isAlert(record);
    const title = el('p', {}, el('strong', { className: 'audit-action', text: action }));
    if (outcome) {
      title.append(' ', el('span', {
        className: `badge${alert || record.outcome === 'failure' ? ' audit-failed' : ''}`,
        text: alert && record.action === 'login' ? 'failed sign-in' : outcome,
      }));
    }
    const who = record.actor === 'admin' ? 'by the administrator' : '';
    // Repeated failures from one client share a record: say how many, and until when.
    const count = Number.isInteger(record.count) && record.count > 1 ? record.count : 1;
    if (count > 1) title.append(' ', el('span', { className: 'badge audit-count', text: `× ${count}` }));
    const meta = [
      formatDate(record.time),
      count > 1 && record.lastTime ? `${count} times, the last ${formatDate(record.lastTime)}` : '',
      record.clientIp ? `IP ${record.clientIp}` : '',
      who,
    ].filter(Boolean).join(' · ');
    return el('li', {
      className: alert ? 'audit-alert' : '',
      attrs: { 'data-action': record.action, 'data-outcome': record.outcome, 'data-count': String(count) },
    }, title, el('p', { className: 'muted audit-meta', text: meta,
      attrs: { title: record.requestId ? `Request ${record.requestId}` : '' } }));
  }

  async function loadAudit(more = false) {
    say(auditError, '');
    auditMore.disabled = true;
    try {
      const query = new URLSearchParams({ limit: String(AUDIT_PAGE_SIZE) });
      if (more && auditCursor) query.set('cursor', auditCursor);
      const page = await api(`/api/audit?${query}`);
      if (!more) clear(auditList);
      const items = listOf(page);
      for (const record of items) auditList.append(auditItem(record));
      if (!more && !items.length) auditList.append(el('li', { className: 'muted', text: 'No activity recorded yet.' }));
      auditCursor = page && page.nextCursor ? page.nextCursor : null;
      auditMore.hidden = !auditCursor;
    } catch (failure) {
      if (failure.status !== 401) say(auditError, failure.message);
    } finally {
      auditMore.disabled = false;
    }
  }

  auditMore.addEventListener('click', () => loadAudit(true));

  function sessionItem(session) {
    const device = describeDevice(session.userAgent);
    const current = Boolean(session.current || session.isCurrent);
    const title = el('p', { className: 'session-device' }, el('strong', { text: device }));
    if (current) title.append(' ', el('span', { className: 'badge', text: 'This device' }));
    const details = [
      session.ip ? `IP ${session.ip}` : '',
      session.createdAt ? `signed in ${formatDate(session.createdAt)}` : '',
    ].filter(Boolean).join(' · ');
    const button = el('button', {
      text: 'Sign out',
      attrs: { type: 'button', 'aria-label': `Sign out ${device}${session.ip ? ` at ${session.ip}` : ''}${current ? ' (this device)' : ''}` },
    });
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        await api(`/api/auth/sessions/${encodeURIComponent(session.id)}`, { method: 'DELETE' });
        if (current) {
          app.signedOut('You signed out of this device.');
          return;
        }
        const next = item.nextElementSibling || item.previousElementSibling;
        item.remove();
        sessionsStatus.textContent = `Signed out ${device}.`;
        (next ? next.querySelector('button') : $('sessions-title')).focus();
      } catch (failure) {
        button.disabled = false;
        if (failure.status !== 401) say(sessionsError, failure.message);
      }
    });
    const item = el('li', { className: current ? 'current' : '', attrs: { 'data-session-id': session.id } },
      el('div', {}, title,
        el('p', { className: 'muted', text: details, attrs: { title: session.userAgent || '' } })),
      button);
    return item;
  }

  async function loadSessions() {
    say(sessionsError, '');
    try {
      const sessions = listOf(await api('/api/auth/sessions'));
      sessions.sort((a, b) => Number(Boolean(b.current)) - Number(Boolean(a.current)));
      clear(sessionsList);
      for (const session of sessions) sessionsList.append(sessionItem(session));
      if (!sessions.length) sessionsList.append(el('li', { className: 'muted', text: 'No active sessions.' }));
      return true;
    } catch (failure) {
      if (failure.status !== 401) say(sessionsError, failure.message);
      return failure.status !== 401;
    }
  }

  passwordForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    say(passwordError, '');
    say(passwordSuccess, '');
    const currentPassword = passwordForm.elements.currentPassword.value;
    const newPassword = passwordForm.elements.newPassword.value;
    const confirm = passwordForm.elements.confirm.value;
    if (!currentPassword || !newPassword) {
      say(passwordError, 'Enter your current password and a new one.');
      return;
    }
    if (newPassword !== confirm) {
      say(passwordError, 'The two new passwords are not the same.');
      passwordForm.elements.confirm.focus();
      return;
    }
    for (const control of passwordForm.elements) control.disabled = true;
    try {
      await api('/api/auth/password', {
        method: 'POST', json: { currentPassword, newPassword },
      });
      passwordForm.reset();
      say(passwordSuccess, 'Password changed. Every other device has been signed out.');
      loadSessions();
    } catch (failure) {
      if (failure.status === 401) return;
      say(passwordError, describeError(failure));
    } finally {
      for (const control of passwordForm.elements) control.disabled = false;
      passwordForm.elements.username.value = app.username();
    }
  });

  signoutButton.addEventListener('click', async () => {
    signoutButton.disabled = true;
    try {
      await api('/api/auth/logout', { method: 'POST', expectUnauthorized: true });
    } catch {
      // Signed out either way: the server has forgotten the session or will refuse it.
    } finally {
      signoutButton.disabled = false;
    }
    app.signedOut('You have signed out.');
  });

  return {
    enter() {
      usernameNode.textContent = app.username();
      passwordForm.elements.username.value = app.username();
      say(passwordSuccess, '');
      sessionsStatus.textContent = '';
      // A session found gone while listing devices signs out at once: nothing more to ask.
      loadSessions().then((signedIn) => { if (signedIn) loadAudit(); });
    },
    reset() {
      passwordForm.reset();
      say(passwordError, '');
      say(passwordSuccess, '');
      clear(sessionsList);
      clear(auditList);
      auditCursor = null;
      auditMore.hidden = true;
    },
  };
}
