// First-run registration and sign-in.
import { api } from './api.js';
import { $, formatWait, say } from './dom.js';

const utf8 = new TextEncoder();

function setBusy(form, busy) {
  for (const control of form.elements) control.disabled = busy;
  form.setAttribute('aria-busy', busy ? 'true' : 'false');
}

/** The server's words, plus when to try again for lockouts and rate limits. */
export function describeError(error) {
  if (error.status === 429 || error.status === 503) {
    if (error.retryAfter !== null && error.retryAfter !== undefined) {
      return `${error.message} You can try again ${formatWait(error.retryAfter)}.`;
    }
  }
  return error.message;
}

// Keeps the submit button off until a lockout or rate limit is over.
function holdUntilRetry(form, error) {
  if (error.status !== 429 || !error.retryAfter) return;
  const button = form.querySelector('button[type="submit"]');
  button.disabled = true;
  window.setTimeout(() => { button.disabled = false; }, error.retryAfter * 1000);
}

export function initAuth(app) {
  const registerForm = $('register-form');
  const registerError = $('register-error');
  const signinForm = $('signin-form');
  const signinError = $('signin-error');
  const setupCodeField = $('register-setup-code-field');
  let setupCodeRequired = false;

  registerForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const username = registerForm.elements.username.value.trim();
    const password = registerForm.elements.password.value;
    const confirm = registerForm.elements.confirm.value;
    const setupCode = registerForm.elements.setupCode.value.trim();
    say(registerError, '');
    if (setupCodeRequired && !setupCode) {
      say(registerError, 'Enter the setup code this server was set up with.');
      registerForm.elements.setupCode.focus();
      return;
    }
    if (!username) {
      say(registerError, 'Choose a username.');
      registerForm.elements.username.focus();
      return;
    }
    if (!password) {
      say(registerError, 'Choose a password.');
      registerForm.elements.password.focus();
      return;
    }
    if (password !== confirm) {
      say(registerError, 'The two passwords are not the same.');
      registerForm.elements.confirm.focus();
      return;
    }
    setBusy(registerForm, true);
    let failure = null;
    try {
      const body = setupCodeRequired ? { username, password, setupCode } : { username, password };
      await api('/api/auth/register', { method: 'POST', json: body });
    } catch (error) {
      failure = error;
    }
    if (failure && failure.code === 'invalid_setup_code') {
      setBusy(registerForm, false);
      say(registerError, 'That setup code is not the right one.');
      registerForm.elements.setupCode.focus();
      return;
    }
    if (failure && (failure.code === 'registration_closed' || failure.status === 403)) {
      setBusy(registerForm, false);
      registerForm.reset();
      app.showSignIn('An account already exists on this Tempo. Sign in with it.');
      return;
    }
    if (failure) {
      setBusy(registerForm, false);
      say(registerError, describeError(failure));
      holdUntilRetry(registerForm, failure);
      registerForm.elements.password.focus();
      return;
    }
    try {
      const user = await api('/api/auth/login', {
        method: 'POST', json: { username, password }, expectUnauthorized: true,
      });
      registerForm.reset();
      app.signedIn(user);
    } catch (error) {
      app.showSignIn(`Your account was created. ${describeError(error)}`);
    } finally {
      setBusy(registerForm, false);
    }
  });

  // A hint while typing; the server's policy is the one that decides.
  registerForm.elements.password.addEventListener('input', () => {
    const bytes = utf8.encode(registerForm.elements.password.value).length;
    registerForm.elements.password.setAttribute('aria-invalid', bytes > 72 ? 'true' : 'false');
  });

  signinForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const username = signinForm.elements.username.value.trim();
    const password = signinForm.elements.password.value;
    say(signinError, '');
    app.notify('');
    if (!username || !password) {
      say(signinError, 'Enter your username and password.');
      (username ? signinForm.elements.password : signinForm.elements.username).focus();
      return;
    }
    setBusy(signinForm, true);
    try {
      const user = await api('/api/auth/login', {
        method: 'POST', json: { username, password }, expectUnauthorized: true,
      });
      signinForm.reset();
      setBusy(signinForm, false);
      app.signedIn(user);
    } catch (error) {
      setBusy(signinForm, false);
      say(signinError, describeError(error));
      holdUntilRetry(signinForm, error);
      signinForm.elements.password.value = '';
      signinForm.elements.password.focus();
    }
  });

  return {
    /** Show the setup-code field when the server asks for one. */
    requireSetupCode(required) {
      setupCodeRequired = Boolean(required);
      setupCodeField.hidden = !setupCodeRequired;
      registerForm.elements.setupCode.required = setupCodeRequired;
    },
    resetSignIn(username) {
      say(signinError, '');
      signinForm.elements.password.value = '';
      if (username) signinForm.elements.username.value = username;
    },
  };
}
