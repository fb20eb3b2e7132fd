// Entry point: decides between first run, sign-in and the signed-in screens, and routes
// between those screens with the location hash.
import { api, onUnauthorized } from './api.js';
import { initAccount } from './account.js';
import { initAuth } from './auth.js';
import { $, say } from './dom.js';
import { initGallery } from './gallery.js';
import { initImports } from './imports.js';
import { initUpload } from './upload.js';

const VIEWS = ['loading', 'register', 'signin', 'gallery', 'upload', 'import', 'account'];
const ROUTES = ['gallery', 'upload', 'import', 'account'];
const TITLES = {
  register: 'Create your account', signin: 'Sign in', gallery: 'Gallery',
  upload: 'Upload', import: 'Import', account: 'Account',
};
const SESSION_ENDED = 'Your session has ended. Please sign in again.';

let user = null;
let current = 'loading';
let announceTimer = null;

function show(view, { focus = true } = {}) {
  current = view;
  for (const name of VIEWS) $(`view-${name}`).hidden = name !== view;
  $('topbar').hidden = !user;
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (link.dataset.nav === view) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.title = TITLES[view] ? `${TITLES[view]} · Tempo` : 'Tempo';
  document.body.dataset.view = view;
  if (focus) {
    const heading = document.querySelector(`#view-${view} h1`);
    if (heading) heading.focus({ preventScroll: true });
  }
}

const controllers = {};

const app = {
  signedIn(profile) {
    user = { userId: profile && profile.userId, username: (profile && profile.username) || '' };
    $('whoami').textContent = user.username;
    app.notify('');
    route();
  },
  signedOut(message = '') {
    user = null;
    for (const controller of Object.values(controllers)) {
      if (controller && controller.reset) controller.reset();
    }
    app.showSignIn(message);
  },
  showSignIn(message = '') {
    user = null;
    controllers.auth.resetSignIn();
    show('signin');
    app.notify(message);
    $('signin-username').focus();
  },
  username() {
    return user ? user.username : '';
  },
  isVisible(view) {
    return current === view;
  },
  notify(message) {
    say($('notice'), message);
  },
  announce(message) {
    const node = $('announcer');
    node.textContent = message;
    window.clearTimeout(announceTimer);
    announceTimer = window.setTimeout(() => { node.textContent = ''; }, 5000);
  },
  galleryChanged() {
    controllers.gallery.changed();
  },
  confirm(text, action = 'Delete') {
    const dialog = $('confirm-dialog');
    if (dialog.open) return Promise.resolve(false);
    $('confirm-title').textContent = `${action}?`;
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = action;
    dialog.returnValue = '';
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'confirm'), { once: true });
      dialog.showModal();
      $('confirm-cancel').focus();
    });
  },
};

function route() {
  if (!user) return;
  const [name, query = ''] = window.location.hash.replace(/^#\/?/, '').split('?');
  const view = ROUTES.includes(name) ? name : 'gallery';
  if (name !== view) {
    window.history.replaceState(null, '', `#/${view}`);
  }
  show(view, { focus: current !== view && current !== 'loading' });
  const controller = controllers[view];
  if (controller && controller.enter) controller.enter(new URLSearchParams(query));
}

async function start() {
  try {
    const availability = await api('/api/auth/registration-available');
    if (availability && availability.registrationAvailable) {
      controllers.auth.requireSetupCode(availability.setupCodeRequired);
      show('register');
      $(availability.setupCodeRequired ? 'register-setup-code' : 'register-username').focus();
      return;
    }
    const profile = await api('/api/auth/me', { expectUnauthorized: true });
    app.signedIn(profile);
  } catch (failure) {
    app.showSignIn(failure.status === 401 ? '' : failure.message);
  }
}

controllers.auth = initAuth(app);
controllers.gallery = initGallery(app);
controllers.upload = initUpload(app);
controllers.import = initImports(app);
controllers.account = initAccount(app);

onUnauthorized(() => {
  if (user) app.signedOut(SESSION_ENDED);
  else if (current !== 'signin' && current !== 'register') app.showSignIn(SESSION_ENDED);
});

window.addEventListener('hashchange', () => {
  if (window.location.hash.startsWith('#/')) route();
});

start();
